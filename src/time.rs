//! oneM2M timestamps (docs/protocol.md §2.3): `YYYYMMDDTHHMMSS[,ffffff]`, always UTC.
//! Time is a value here, passed in by the caller, so the core never reads a clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The two clocks the engine is handed with every input. Timers run on
/// `mono` only, so an NTP step at gateway boot moves none of them; `wall`
/// is for what goes on the wire (`ot`, `rqet`, `ct`, `lt`, `et`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: Timestamp,
}

impl Now {
    /// Both clocks, read now (the driver's job, never the engine's).
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    /// A simulated start at wall time `wall`.
    pub fn at(wall: Timestamp) -> Now {
        Now {
            mono: Instant::now(),
            wall,
        }
    }

    /// Both clocks advanced by `d`.
    pub fn plus(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall.plus(d),
        }
    }

    /// Advanced to the monotonic instant `t` (no-op if it is past).
    pub fn advance_to(self, t: Instant) -> Now {
        self.plus(t.saturating_duration_since(self.mono))
    }
}

/// Microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as u64)
    }

    pub fn from_secs(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000)
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_micros() as u64))
    }

    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `20261125T191258,931402`.
    pub fn to_onem2m(self) -> String {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        format!(
            "{y:04}{mo:02}{d:02}T{:02}{:02}{:02},{micros:06}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }

    /// Parses a timestamp, with or without the fraction.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let (main, frac) = match s.split_once([',', '.']) {
            Some((m, f)) => (m, Some(f)),
            None => (s, None),
        };
        let b = main.as_bytes();
        if b.len() != 15 || b[8] != b'T' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let t = main.get(r)?;
            if t.bytes().all(|c| c.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        };
        let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let days = days_from_civil(y as i64, mo as u32, d as u32);
        if days < 0 {
            return None;
        }
        let micros = match frac {
            None => 0,
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
                let padded = format!("{f:0<6}");
                padded[..6].parse::<u64>().ok()?
            }
            Some(_) => return None,
        };
        let secs = days as u64 * 86_400 + h * 3600 + mi * 60 + se;
        Some(Timestamp(secs * 1_000_000 + micros))
    }

    /// An `m2m:absRelTimestamp`: absolute, or a relative offset in ms from `now`.
    pub fn parse_abs_rel(s: &str, now: Timestamp) -> Option<Timestamp> {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            let ms: u64 = s.parse().ok()?;
            return Some(now.plus(Duration::from_millis(ms)));
        }
        Timestamp::parse(s)
    }
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_acme() {
        let t = Timestamp::parse("20261125T191258,931402").expect("parse");
        assert_eq!(t.to_onem2m(), "20261125T191258,931402");
        assert_eq!(
            Timestamp::parse("20000101T000000").map(|t| t.0 / 1_000_000),
            Some(946_684_800)
        );
        assert_eq!(Timestamp::parse("2026-11-25T19:12"), None);
        assert_eq!(Timestamp::parse("20261325T191258"), None);
    }

    #[test]
    fn relative_timestamps_are_milliseconds() {
        let now = Timestamp::from_secs(1000);
        assert_eq!(
            Timestamp::parse_abs_rel("1500", now),
            Some(Timestamp(1_001_500_000))
        );
    }

    proptest! {
        #[test]
        fn round_trips(us in 0u64..8_000_000_000_000_000) {
            let t = Timestamp(us);
            prop_assert_eq!(Timestamp::parse(&t.to_onem2m()), Some(t));
        }
    }
}
