//! The service manager's notification protocol (sd_notify(3), which
//! `Type=notify` and `WatchdogSec=` in systemd/m2mnode.service rely on;
//! docs/operations.md "systemd"): one datagram per message to the unix
//! socket in `$NOTIFY_SOCKET` (a leading '@' names the abstract
//! namespace). Without `$NOTIFY_SOCKET` every call does nothing.
//!
//! `READY=1` goes once, when every broker link is connected and subscribed
//! (a node that is "up" but cannot hear anything is not ready); `STATUS=`
//! follows the links and the own registration; `WATCHDOG=1` is sent from
//! the node's loop at half of `$WATCHDOG_USEC`, so a loop that stops
//! turning stops feeding it.

use crate::engine::{Engine, Link};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// A connection to the service manager, if the node runs under one.
#[derive(Default)]
pub struct Supervisor {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    ready: bool,
    /// What the last `STATUS=` said: links up, registration state.
    said: Option<(bool, Option<&'static str>)>,
}

impl Supervisor {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Supervisor {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Supervisor::default();
        };
        let socket = match address(&path.to_string_lossy()).and_then(|addr| {
            let s = UnixDatagram::unbound()?;
            s.set_nonblocking(true)?;
            Ok((s, addr))
        }) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "cannot use $NOTIFY_SOCKET; the service manager will not hear from this node");
                None
            }
        };
        // The watchdog is this process's only if WATCHDOG_PID (when set)
        // names it (sd_watchdog_enabled(3)).
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Supervisor {
            next_ping: watchdog.map(|w| Instant::now() + w),
            socket,
            watchdog,
            ready: false,
            said: None,
        }
    }

    /// When [`Supervisor::ping`] is due.
    pub fn next_ping(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Feeds the watchdog.
    pub fn ping(&mut self) {
        self.send("WATCHDOG=1");
        self.next_ping = self.watchdog.map(|w| Instant::now() + w);
    }

    /// After every round of inputs: `READY=1` the first time every link is
    /// up, and a `STATUS=` line whenever the state it describes changes.
    pub fn update(&mut self, engine: &Engine, split: bool) {
        if self.socket.is_none() {
            return;
        }
        let connected = engine.link_up(Link::LOCAL) && (!split || engine.link_up(Link::UPSTREAM));
        let now = (connected, crate::metrics::registration_state(engine));
        if self.said == Some(now) {
            return;
        }
        self.said = Some(now);
        let mut msg = format!("STATUS={}", status_line(now.0, now.1));
        if connected && !self.ready {
            self.ready = true;
            msg = format!("READY=1\n{msg}");
        }
        self.send(&msg);
    }

    /// The node is shutting down (deregistering first).
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=deregistering and stopping");
    }

    fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.socket {
            if let Err(e) = s.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!(error = %e, "cannot notify the service manager");
            }
        }
    }
}

fn address(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => abstract_address(name.as_bytes()),
        None if path.starts_with('/') => SocketAddr::from_pathname(path),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name ('@...')",
        )),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// What `systemctl status` shows under the unit.
fn status_line(connected: bool, registration: Option<&str>) -> String {
    let link = if connected {
        "connected"
    } else {
        "waiting for the MQTT broker"
    };
    match registration {
        None => format!("{link}; registers nowhere"),
        Some(state) => format!("{link}; registration: {state}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_addresses() {
        assert!(address("/run/systemd/notify").is_ok());
        assert!(address("relative/path").is_err());
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let a = address("@m2mnode/test").expect("abstract");
            assert_eq!(a.as_abstract_name(), Some(&b"m2mnode/test"[..]));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("m2mnode-sdnotify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&abstract_address(name.as_bytes()).expect("addr"))
            .expect("bind");
        let s = Supervisor {
            socket: Some((
                UnixDatagram::unbound().expect("socket"),
                address(&format!("@{name}")).expect("addr"),
            )),
            ..Supervisor::default()
        };
        s.send("STATUS=x");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STATUS=x");
    }
}
