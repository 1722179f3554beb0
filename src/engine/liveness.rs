//! The registrar side of liveness (ACME `_checkCSRLiveliness`; docs/protocol.md §5.5):
//! each registree's `<CSEBase>` is retrieved once per check interval, and a
//! registree that fails [`MISSES`] probes in a row loses its CSR.
//!
//! Probes are spread: each registree runs on its own schedule, offset at
//! random when it is added, with a little jitter per round, and at most
//! `max_in_flight` probes are outstanding. Firing every probe at once made
//! 10,000 answers arrive after their timeout and count as misses.

use crate::primitive::Rsc;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A registree is removed after this many failed probes in a row. ACME drops
/// it after one; one probe lost to a broker restart should not throw away
/// everything registered below a CSE.
pub const MISSES: u32 = 2;

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// The registree (or the broker on its behalf, 4008) answered this.
    Answered(Rsc),
    /// This node had no broker connection: silence then proves nothing.
    NoConnection,
}

/// What a probe's outcome means for the registree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Alive,
    /// Failed, `n` in a row, not yet gone.
    Missed(u32),
    Gone,
    /// Not counted (no connection, or the registree left meanwhile).
    Ignored,
}

struct Probe {
    /// When the next probe is due; `None` while one is in flight.
    due: Option<Instant>,
    misses: u32,
    /// Wall time of the last answered probe, for `m2mnode status`.
    last_ok: Option<crate::time::Timestamp>,
}

pub(crate) struct Liveness {
    interval: Duration,
    timeout: Duration,
    min_in_flight: usize,
    probes: HashMap<String, Probe>,
    schedule: BTreeSet<(Instant, String)>,
    in_flight: usize,
    rng: u64,
}

impl Liveness {
    pub fn new(interval: Duration, timeout: Duration, min_in_flight: usize, seed: u64) -> Liveness {
        Liveness {
            interval,
            timeout,
            min_in_flight: min_in_flight.max(1),
            probes: HashMap::new(),
            schedule: BTreeSet::new(),
            in_flight: 0,
            rng: seed | 1,
        }
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// The bound on outstanding probes: enough that every registree is
    /// probed once per interval even if each probe takes the whole timeout,
    /// never fewer than the configured floor.
    fn max_in_flight(&self) -> usize {
        let per_interval = self.interval.as_secs_f64().max(0.001);
        let needed = (self.probes.len() as f64 * self.timeout.as_secs_f64() / per_interval).ceil();
        self.min_in_flight.max(needed as usize + 1)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn misses(&self, csi: &str) -> Option<u32> {
        self.probes.get(csi).map(|p| p.misses)
    }

    /// Wall time of `csi`'s last answered probe.
    pub fn last_ok(&self, csi: &str) -> Option<crate::time::Timestamp> {
        self.probes.get(csi).and_then(|p| p.last_ok)
    }

    /// A uniform fraction in [0, 1), deterministic for a seed (xorshift64).
    fn fraction(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0
    }

    /// A new registree: its first probe somewhere in the next interval, so
    /// registrees that came together (a restart) are not probed together.
    pub fn add(&mut self, csi: &str, now: Instant) {
        if self.probes.contains_key(csi) {
            return;
        }
        let first = now + self.interval.mul_f64(0.05 + 0.95 * self.fraction());
        self.probes.insert(
            csi.to_owned(),
            Probe {
                due: Some(first),
                misses: 0,
                last_ok: None,
            },
        );
        self.schedule.insert((first, csi.to_owned()));
    }

    /// The registree is gone (its CSR was deleted): its counter goes with it.
    pub fn remove(&mut self, csi: &str) {
        if let Some(p) = self.probes.remove(csi) {
            if let Some(due) = p.due {
                self.schedule.remove(&(due, csi.to_owned()));
            }
        }
    }

    /// When the next probe may start (`None`: nothing to do, or the
    /// in-flight limit is reached and an answer will wake the caller).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight >= self.max_in_flight() {
            return None;
        }
        self.schedule.first().map(|(t, _)| *t)
    }

    /// The next registree to probe now, if any is due and the limit allows.
    pub fn next_due(&mut self, now: Instant) -> Option<String> {
        if self.in_flight >= self.max_in_flight() {
            return None;
        }
        let (t, _) = self.schedule.first()?;
        if *t > now {
            return None;
        }
        let (_, csi) = self.schedule.pop_first()?;
        if let Some(p) = self.probes.get_mut(&csi) {
            p.due = None;
        }
        self.in_flight += 1;
        Some(csi)
    }

    /// Makes every registree due now (SIGUSR1, `m2mnode check`).
    pub fn all_due(&mut self, now: Instant) {
        let due: Vec<(Instant, String)> = std::mem::take(&mut self.schedule).into_iter().collect();
        for (_, csi) in due {
            if let Some(p) = self.probes.get_mut(&csi) {
                p.due = Some(now);
            }
            self.schedule.insert((now, csi));
        }
    }

    /// The end of a probe started by [`Liveness::next_due`].
    pub fn result(&mut self, csi: &str, outcome: ProbeOutcome, now: crate::time::Now) -> Verdict {
        let wall = now.wall;
        let now = now.mono;
        self.in_flight = self.in_flight.saturating_sub(1);
        let next = now + self.interval.mul_f64(0.9 + 0.2 * self.fraction());
        let Some(p) = self.probes.get_mut(csi) else {
            return Verdict::Ignored;
        };
        let verdict = match outcome {
            ProbeOutcome::Answered(Rsc::OK) => {
                p.misses = 0;
                p.last_ok = Some(wall);
                Verdict::Alive
            }
            ProbeOutcome::Answered(_) => {
                p.misses += 1;
                if p.misses >= MISSES {
                    Verdict::Gone
                } else {
                    Verdict::Missed(p.misses)
                }
            }
            ProbeOutcome::NoConnection => Verdict::Ignored,
        };
        if verdict == Verdict::Gone {
            self.probes.remove(csi);
        } else {
            p.due = Some(next);
            self.schedule.insert((next, csi.to_owned()));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Now, Timestamp};

    fn at(t: Instant) -> Now {
        Now {
            mono: t,
            wall: Timestamp(0),
        }
    }

    #[test]
    fn probes_are_spread_and_bounded() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(30);
        let mut l = Liveness::new(interval, Duration::from_millis(1), 8, 7);
        for i in 0..1000 {
            l.add(&format!("/c{i}"), t0);
        }
        // Over the first interval, every tenth of it sees some probes due,
        // never the whole population at once.
        let mut per_slot = [0usize; 10];
        for (slot, count) in per_slot.iter_mut().enumerate() {
            let at = t0 + interval.mul_f64((slot + 1) as f64 / 10.0);
            while let Some(csi) = l.next_due(at) {
                *count += 1;
                l.result(&csi, ProbeOutcome::Answered(Rsc::OK), super::tests::at(at));
                assert!(l.in_flight <= 8);
            }
        }
        assert_eq!(per_slot.iter().sum::<usize>(), 1000);
        assert!(per_slot.iter().all(|&n| n < 200), "{per_slot:?}");
    }

    #[test]
    fn a_success_resets_the_count_and_the_counter_goes_with_the_csr() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(1), Duration::from_millis(1), 4, 1);
        l.add("/a", t0);
        let t = t0 + Duration::from_secs(2);
        let fail = ProbeOutcome::Answered(Rsc::REQUEST_TIMEOUT);
        assert_eq!(l.next_due(t).as_deref(), Some("/a"));
        assert_eq!(l.result("/a", fail, at(t)), Verdict::Missed(1));
        let t = t + Duration::from_secs(2);
        assert_eq!(l.next_due(t).as_deref(), Some("/a"));
        assert_eq!(
            l.result("/a", ProbeOutcome::Answered(Rsc::OK), at(t)),
            Verdict::Alive
        );
        let t = t + Duration::from_secs(2);
        l.next_due(t);
        assert_eq!(l.result("/a", fail, at(t)), Verdict::Missed(1));
        let t = t + Duration::from_secs(2);
        l.next_due(t);
        assert_eq!(
            l.result("/a", ProbeOutcome::NoConnection, at(t)),
            Verdict::Ignored
        );
        let t = t + Duration::from_secs(2);
        l.next_due(t);
        assert_eq!(l.result("/a", fail, at(t)), Verdict::Gone);
        assert_eq!(l.len(), 0);
        l.add("/a", t);
        assert_eq!(l.misses("/a"), Some(0), "a new registration starts afresh");
    }
}
