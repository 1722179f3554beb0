//! What happened, as the engine tells it: each [`Event`] carries its
//! severity and its message, so the driver prints and decides nothing
//! (docs/operations.md, "Logs", gives the level of each line). The
//! throttles that keep a flood from becoming a flood of lines live here
//! too, on the engine's clock.

use super::registration::Step;
use crate::id::CseId;
use crate::primitive::{Operation, Rsc};
use std::fmt;
use std::time::{Duration, Instant};

/// How serious an event is: the level the driver prints it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a registree's CSR went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It deleted it (or its registrar did, through this node).
    Deleted,
    /// It failed [`super::LIVENESS_MISSES`] liveness probes in a row.
    Unresponsive { rsc: Rsc },
}

/// Why the transport dropped a publish before it became a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Larger than `mqtt.max_payload`.
    Oversize { bytes: usize, limit: usize },
    /// On a topic that is not `/oneM2M/{req|resp}/<orig>/<recv>/<type>`
    /// (Mobius answers a second time without the type level:
    /// docs/mobius.md).
    NotOneM2M,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Oversize { bytes, limit } => write!(
                f,
                "an oversize payload of {bytes} bytes (mqtt.max_payload is {limit})"
            ),
            Dropped::NotOneM2M => f.write_str("a publish on a topic that is not oneM2M"),
        }
    }
}

/// Why a payload was dropped without an answer ([`Event::Dropped`]), for
/// the metrics' label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Larger than `mqtt.max_payload`, dropped by the transport.
    Oversize,
    /// A request that is not a primitive and has no rqi to answer.
    UndecodableRequest,
    /// A response that cannot be read.
    UndecodableResponse,
    /// A request in a serialization this node does not speak, with no rqi
    /// to answer 4015 to.
    UnsupportedSerialization,
    /// An answer that could not be encoded.
    UnencodableAnswer,
}

impl DropReason {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::UndecodableRequest => "undecodable_request",
            DropReason::UndecodableResponse => "undecodable_response",
            DropReason::UnsupportedSerialization => "unsupported_serialization",
            DropReason::UnencodableAnswer => "unencodable_answer",
        }
    }
}

/// What a broker connection went through: the transport measures and
/// reports, the engine judges how much it is news (docs/operations.md,
/// "Logs" and "Troubleshooting").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkReport {
    /// Connected (subscribing follows); `session_present`: the broker kept
    /// a session of this client id.
    Connected {
        broker: String,
        session_present: bool,
    },
    /// A connection that was up went down; reconnecting.
    Lost { why: String },
    /// The broker refused the login (CONNACK 4 or 5): a configuration fault
    /// that retrying does not fix.
    LoginRefused {
        broker: String,
        user: Option<String>,
        why: String,
    },
    /// A connection attempt failed otherwise (nothing listens, TLS, ...).
    Unreachable { broker: String, why: String },
    /// The broker keeps closing the connection right after accepting it,
    /// `drops` times in a row: another client uses this client id.
    Takeover {
        client_id: String,
        drops: u32,
        why: String,
    },
    /// A message over the client's limit was dropped by purging the
    /// broker session (a broker without a message size limit).
    SessionPurged { size: usize, limit: usize },
    /// The subscriptions could not be sent.
    CannotSubscribe { why: String },
}

/// What the node has been doing, for the sign-of-life line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Why now: the hourly line, or the end of a check asked for (SIGUSR1).
    pub checked_now: bool,
    /// Registered at the registrar (`None`: this node has none).
    pub registered: Option<bool>,
    pub registrees: usize,
    /// Registrees whose last probe failed.
    pub registrees_missing: usize,
    /// Requests answered and refused since the last summary.
    pub handled: u64,
    pub refused: u64,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Registered {
        registrar: CseId,
    },
    /// `confirmed`: the registrar confirmed the deletion (2002/4004) or the
    /// CSR was lost there; false: it did not, and the CSR `csr` may still be
    /// there; `retried_at_start`: the next start deletes it before
    /// registering again (docs/protocol.md §5.6).
    Deregistered {
        registrar: CseId,
        confirmed: bool,
        csr: String,
        retried_at_start: bool,
    },
    /// The registrar refused the optional `attributes` of the own CSR and
    /// took it without them; they are left out from now on.
    AttributesRefused {
        registrar: CseId,
        attributes: Vec<String>,
        answer: Option<(Rsc, String)>,
    },
    /// A registration step failed and is retried; `answer`: the registrar's
    /// status and `m2m:dbg`, `None` when it did not answer.
    RegistrationRetry {
        step: Step,
        retry_in: Duration,
        answer: Option<(Rsc, String)>,
    },
    /// The registrar no longer has the own CSR; registering again.
    RegistrationLost {
        registrar: CseId,
        answer: Option<(Rsc, String)>,
    },
    /// The check of the own CSR went unanswered `times` in a row.
    CheckUnanswered {
        registrar: CseId,
        times: u32,
    },
    /// The own CSR's name at the registrar is held by another CSE.
    Squatted {
        rn: String,
        csi: String,
    },
    /// The registrar changed by a reload: deregistering from `from`, then
    /// registering at `to`.
    RegistrarChanged {
        from: CseId,
        to: CseId,
    },
    RegistreeAdded {
        csi: String,
    },
    RegistreeRemoved {
        csi: String,
        why: Removal,
    },
    /// A liveness probe failed; the registree stays for now.
    ProbeMissed {
        csi: String,
        rsc: Rsc,
        misses: u32,
    },
    /// A request was answered (or refused); for the request log.
    Handled {
        op: Operation,
        to: String,
        fr: String,
        rsc: Rsc,
        why: Option<String>,
    },
    /// More requests were refused in the last minute than a healthy node
    /// sees; each refusal itself is a debug line.
    RefusalsSpiking {
        count: u64,
    },
    /// A batch could not be written; its requests were answered 5000.
    StoreFailed {
        why: String,
    },
    /// A request of this node's own registration would exceed
    /// `mqtt.max_payload` (e.g. the `dcse` of a large subtree).
    OwnRequestTooLarge {
        op: Operation,
        bytes: usize,
        limit: usize,
        dcse: usize,
    },
    /// The registrar refused to take the own CSR's change (5000: a limit
    /// of its own, e.g. `dcse` beyond its `[limits] dcse_entries`): the
    /// registration stands, and the `dcse` CSEs below this one are not all
    /// announced there (those missing are unreachable through it). Once
    /// until a change is taken again.
    OwnUpdateRefused {
        registrar: CseId,
        dcse: usize,
        answer: Option<(Rsc, String)>,
    },
    /// A narrowed `[registrees] allowed` (reload) no longer matches these
    /// registrees; they stay registered until they go.
    NoLongerAllowed {
        csis: Vec<String>,
    },
    /// A payload that could not be answered was dropped.
    Dropped {
        reason: DropReason,
        why: String,
    },
    /// A publish that is not a oneM2M message at all (not news).
    Ignored {
        topic: String,
    },
    /// A payload dropped beyond the lines a minute shows (counted, told in
    /// [`Event::DropsSuppressed`] when the minute is over).
    DroppedQuietly {
        reason: DropReason,
    },
    /// Payloads dropped in the last minute beyond those shown one by one.
    DropsSuppressed {
        count: u32,
    },
    /// The sign of life: hourly, and after a check asked for.
    Summary(Summary),
    /// A broker connection's report; `told`: news at its level (a refused
    /// login or an unreachable broker is told at the first failure, then
    /// as a reminder, not at every retry); `attempts`: failures since the
    /// last connection.
    Link {
        link: crate::topic::Link,
        report: LinkReport,
        attempts: u32,
        told: bool,
    },
    /// Deregistration is over (or there was none): the driver may exit.
    Stopped,
    /// The SP (`spi`) and root IN-CSE (`ici`) learned from the registrar,
    /// shown in the CSEBase and handed down to the registrees.
    SpLearned {
        spi: String,
        ici: Option<String>,
    },
    /// `cse.sp_id` is not the registrar's `spi` (told once).
    SpMismatch {
        configured: String,
        registrar: String,
    },
    /// An event of the registration at another SP's IN-CSE `sp`
    /// (`[sp_registrar.*]`, docs/protocol.md §13): told as the own
    /// registration's, with the SP named.
    PeerSp {
        sp: String,
        event: Box<Event>,
    },
}

impl Event {
    pub fn severity(&self) -> Severity {
        use Severity::*;
        match self {
            Event::PeerSp { event, .. } => event.severity(),
            Event::SpLearned { .. } => Info,
            Event::SpMismatch { .. } => Warn,
            Event::Registered { .. }
            | Event::AttributesRefused { .. }
            | Event::RegistrarChanged { .. }
            | Event::RegistreeAdded { .. }
            | Event::RegistreeRemoved { .. }
            | Event::Summary(_) => Info,
            Event::Deregistered { confirmed, .. } => {
                if *confirmed {
                    Info
                } else {
                    Warn
                }
            }
            Event::OwnUpdateRefused { .. } => Error,
            Event::Link { told: false, .. } => Debug,
            Event::Link { report, .. } => match report {
                LinkReport::Connected { .. } => Info,
                LinkReport::Lost { .. }
                | LinkReport::LoginRefused { .. }
                | LinkReport::Unreachable { .. }
                | LinkReport::CannotSubscribe { .. } => Warn,
                LinkReport::Takeover { .. } | LinkReport::SessionPurged { .. } => Error,
            },
            Event::NoLongerAllowed { .. } => Warn,
            Event::RegistrationRetry { .. }
            | Event::RegistrationLost { .. }
            | Event::RefusalsSpiking { .. }
            | Event::Dropped { .. }
            | Event::DropsSuppressed { .. } => Warn,
            // The first, then every tenth: a registrar that is away for an
            // hour makes a handful of lines, not hundreds.
            Event::CheckUnanswered { times, .. } => {
                if *times == 1 || times % 10 == 0 {
                    Warn
                } else {
                    Debug
                }
            }
            Event::Squatted { .. }
            | Event::StoreFailed { .. }
            | Event::OwnRequestTooLarge { .. } => Error,
            Event::ProbeMissed { .. }
            | Event::Handled { .. }
            | Event::Ignored { .. }
            | Event::DroppedQuietly { .. }
            | Event::Stopped => Debug,
        }
    }

    /// A short name of the kind of event (a field of every log line).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::PeerSp { event, .. } => event.kind(),
            Event::SpLearned { .. } => "sp_learned",
            Event::SpMismatch { .. } => "sp_mismatch",
            Event::Registered { .. } => "registered",
            Event::Deregistered { .. } => "deregistered",
            Event::AttributesRefused { .. } => "attributes_refused",
            Event::RegistrationRetry { .. } => "registration_retry",
            Event::RegistrationLost { .. } => "registration_lost",
            Event::CheckUnanswered { .. } => "check_unanswered",
            Event::Squatted { .. } => "squatted",
            Event::RegistrarChanged { .. } => "registrar_changed",
            Event::RegistreeAdded { .. } => "registree_added",
            Event::RegistreeRemoved { .. } => "registree_removed",
            Event::ProbeMissed { .. } => "probe_missed",
            Event::Handled { .. } => "handled",
            Event::RefusalsSpiking { .. } => "refusals",
            Event::StoreFailed { .. } => "store_failed",
            Event::OwnRequestTooLarge { .. } => "own_request_too_large",
            Event::OwnUpdateRefused { .. } => "own_update_refused",
            Event::NoLongerAllowed { .. } => "no_longer_allowed",
            Event::Dropped { .. } => "dropped",
            Event::DropsSuppressed { .. } => "dropped",
            Event::Ignored { .. } => "ignored",
            Event::DroppedQuietly { .. } => "dropped",
            Event::Summary(_) => "summary",
            Event::Link { .. } => "link",
            Event::Stopped => "stopped",
        }
    }
}

/// What the operator may do about a refusal of the own registration.
fn hint(rsc: Rsc) -> &'static str {
    match rsc {
        Rsc::NOT_FOUND => " (is [registrar] name the registrar's CSEBase resourceName?)",
        Rsc::SECURITY_ASSOCIATION_REQUIRED | Rsc::ORIGINATOR_HAS_NO_PRIVILEGE => {
            " (is this CSE-ID allowed to register there?)"
        }
        _ => "",
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::CleanStale => "deleting a stale own <remoteCSE>",
        Step::Create => "creating the own <remoteCSE>",
        Step::Adopt => "retrieving the existing own <remoteCSE>",
        Step::Update => "updating the own <remoteCSE>",
        Step::FetchBase => "retrieving the registrar's <CSEBase>",
        Step::Check => "checking the own <remoteCSE>",
    }
}

fn duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Registered { registrar } => write!(f, "registered at {registrar}"),
            Event::Deregistered {
                registrar,
                confirmed: true,
                ..
            } => write!(f, "deregistered from {registrar}"),
            Event::Deregistered {
                registrar,
                confirmed: false,
                csr,
                retried_at_start,
            } => {
                write!(
                    f,
                    "could not deregister from {registrar}: it did not confirm the DELETE; "
                )?;
                if *retried_at_start {
                    write!(f, "{csr} is deleted at the next start, before registering again")
                } else {
                    write!(
                        f,
                        "{csr} may stay there (no data_dir to remember it): delete it at the registrar"
                    )
                }
            }
            Event::AttributesRefused {
                registrar,
                attributes,
                answer,
            } => {
                write!(
                    f,
                    "{registrar} refused the optional attributes {} of the own <remoteCSE>",
                    attributes.join(", ")
                )?;
                if let Some((rsc, why)) = answer {
                    write!(f, " ({rsc} {why})")?;
                }
                f.write_str(" and took it without them; they are left out from now on")
            }
            Event::RegistrationRetry {
                step,
                retry_in,
                answer: None,
            } => write!(
                f,
                "the registrar did not answer ({}); retrying in {}",
                step_name(*step),
                duration(*retry_in)
            ),
            Event::RegistrationRetry {
                step,
                retry_in,
                answer: Some((rsc, why)),
            } => write!(
                f,
                "the registrar refused {}: {rsc} {why}{}; retrying in {}",
                step_name(*step),
                hint(*rsc),
                duration(*retry_in)
            ),
            Event::RegistrationLost { registrar, answer } => {
                write!(f, "{registrar} no longer has this CSE's <remoteCSE>")?;
                if let Some((rsc, why)) = answer {
                    write!(f, " ({rsc} {why})")?;
                }
                f.write_str(" (a registrar reset?); registering again")
            }
            Event::CheckUnanswered { registrar, times } => write!(
                f,
                "{registrar} did not answer the check of the own <remoteCSE> ({times} in a row); the registration is kept and checked again"
            ),
            Event::Squatted { rn, csi } => write!(
                f,
                "the own <remoteCSE> name {rn} at the registrar is taken by {csi}; remove that CSR at the registrar or give this CSE another CSE-ID"
            ),
            Event::RegistrarChanged { from, to } if from == to => write!(
                f,
                "[registrar] changed: deregistering from {from}, then registering there again"
            ),
            Event::RegistrarChanged { from, to } => write!(
                f,
                "the registrar changed from {from} to {to}: deregistering there, then registering here"
            ),
            Event::RegistreeAdded { csi } => write!(f, "registree {csi} registered"),
            Event::RegistreeRemoved {
                csi,
                why: Removal::Deleted,
            } => write!(f, "registree {csi} deregistered"),
            Event::RegistreeRemoved {
                csi,
                why: Removal::Unresponsive { rsc },
            } => write!(
                f,
                "registree {csi} did not answer its liveness checks ({rsc}); removed its <remoteCSE>"
            ),
            Event::ProbeMissed { csi, rsc, misses } => write!(
                f,
                "liveness probe of {csi} failed ({rsc}), {misses} in a row"
            ),
            Event::Handled {
                op,
                to,
                fr,
                rsc,
                why,
            } => {
                write!(f, "{} {to} from {fr}: {rsc}", op.name())?;
                if let Some(why) = why {
                    write!(f, " ({why})")?;
                }
                Ok(())
            }
            Event::RefusalsSpiking { count } => write!(
                f,
                "{count} requests were refused in the last minute (each at debug level; `m2mnode status` counts them)"
            ),
            Event::StoreFailed { why } => {
                write!(f, "cannot write the store; the change was refused (5000): {why}")
            }
            Event::OwnRequestTooLarge {
                op,
                bytes,
                limit,
                dcse,
            } => write!(
                f,
                "the own <remoteCSE> {} would be {bytes} bytes, over mqtt.max_payload ({limit}), with {dcse} descendants in dcse; raise mqtt.max_payload (and the brokers' limits); the registration is kept",
                op.name()
            ),
            Event::OwnUpdateRefused {
                registrar,
                dcse,
                answer,
            } => {
                write!(f, "{registrar} refused the update of the own <remoteCSE>")?;
                if let Some((rsc, why)) = answer {
                    write!(f, " ({rsc} {why})")?;
                }
                write!(
                    f,
                    ": the registration stands, but not all of the {dcse} descendants in dcse are announced there (those missing cannot be reached through it); tried again after the next check"
                )
            }
            Event::NoLongerAllowed { csis } => write!(
                f,
                "[registrees] allowed no longer matches {} registree(s): {}; they stay registered until they go",
                csis.len(),
                csis.join(", ")
            ),
            Event::Dropped { why, .. } => write!(f, "dropping {why}"),
            Event::DroppedQuietly { reason } => {
                write!(f, "dropping a payload ({})", reason.name())
            }
            Event::Ignored { topic } => {
                write!(f, "ignoring a publish on {topic}: not a oneM2M topic")
            }
            Event::DropsSuppressed { count } => write!(
                f,
                "{count} more payloads were dropped in the last minute without a line each"
            ),
            Event::Summary(s) => {
                f.write_str(if s.checked_now {
                    "checked now: "
                } else {
                    "still running: "
                })?;
                match s.registered {
                    Some(true) => f.write_str("registered")?,
                    Some(false) => f.write_str("not registered")?,
                    None => f.write_str("no registrar")?,
                }
                write!(f, ", {} registrees", s.registrees)?;
                if s.registrees_missing > 0 {
                    write!(f, " ({} missing their last check)", s.registrees_missing)?;
                }
                write!(
                    f,
                    ", {} requests handled and {} refused since the last summary",
                    s.handled, s.refused
                )
            }
            Event::Link {
                report, attempts, ..
            } => match report {
                LinkReport::Connected {
                    broker,
                    session_present,
                } => write!(
                    f,
                    "connected to the MQTT broker {broker} (session_present={session_present})"
                ),
                LinkReport::Lost { why } => {
                    write!(f, "lost the MQTT broker ({why}); reconnecting")
                }
                LinkReport::LoginRefused { broker, user, why } => {
                    write!(f, "the MQTT broker at {broker} refused the login")?;
                    if let Some(u) = user {
                        write!(f, " as {u:?}")?;
                    }
                    write!(f, ": {why}; retrying ({attempts} attempts)")
                }
                LinkReport::Unreachable { broker, why } => write!(
                    f,
                    "cannot reach the MQTT broker at {broker}: {why}; retrying ({attempts} attempts)"
                ),
                LinkReport::Takeover {
                    client_id,
                    drops,
                    why,
                } => write!(
                    f,
                    "the broker keeps closing the connection right after accepting it ({drops} times): another client uses the client id {client_id}; is a second node running with this CSE-ID? ({why})"
                ),
                LinkReport::SessionPurged { size, limit } => write!(
                    f,
                    "dropping an oversize message of {size} bytes (the client reads {limit}) by purging the broker session, which loses what was queued; set max_packet_size on the broker (mosquitto/production.conf)"
                ),
                LinkReport::CannotSubscribe { why } => write!(f, "cannot subscribe: {why}"),
            },
            Event::Stopped => f.write_str("stopped"),
            Event::SpLearned { spi, ici } => write!(
                f,
                "in SP {spi} (IN-CSE {}), as the registrar says; handed down to the registrees",
                ici.as_deref().unwrap_or("not told")
            ),
            Event::SpMismatch {
                configured,
                registrar,
            } => write!(
                f,
                "cse.sp_id is {configured} but the registrar is in {registrar}; keeping {configured} (ACME registrees of this node would follow {registrar})"
            ),
            // The own registration's hints name [registrar]; a peer's
            // settings are in [sp_registrar.*].
            Event::PeerSp { sp, event } => write!(
                f,
                "SP //{sp}: {}",
                event.to_string().replace("[registrar]", "[sp_registrar.*]")
            ),
        }
    }
}

/// At most `per_window` lines a window; the rest are counted and told in
/// one line when the next window begins.
pub(crate) struct Throttle {
    window: Duration,
    per_window: u32,
    start: Option<Instant>,
    shown: u32,
    suppressed: u32,
}

impl Throttle {
    pub(crate) fn new(window: Duration, per_window: u32) -> Throttle {
        Throttle {
            window,
            per_window,
            start: None,
            shown: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be shown at `now`, and how many were
    /// suppressed in the window that just ended, if any.
    pub(crate) fn allow(&mut self, now: Instant) -> (bool, Option<u32>) {
        let mut ended = None;
        match self.start {
            Some(s) if now.duration_since(s) < self.window => {}
            _ => {
                if self.suppressed > 0 {
                    ended = Some(self.suppressed);
                }
                self.start = Some(now);
                self.shown = 0;
                self.suppressed = 0;
            }
        }
        if self.shown < self.per_window {
            self.shown += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_shows_some_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60), 2);
        assert_eq!(t.allow(t0), (true, None));
        assert_eq!(t.allow(t0), (true, None));
        assert_eq!(t.allow(t0), (false, None));
        assert_eq!(t.allow(t0), (false, None));
        assert_eq!(t.allow(t0 + Duration::from_secs(60)), (true, Some(2)));
    }

    #[test]
    fn drop_reasons_have_distinct_labels() {
        let all = [
            DropReason::Oversize,
            DropReason::UndecodableRequest,
            DropReason::UndecodableResponse,
            DropReason::UnsupportedSerialization,
            DropReason::UnencodableAnswer,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn every_check_unanswered_is_not_news() {
        let r = CseId::new("/id-in").expect("id");
        let sev = |times| {
            Event::CheckUnanswered {
                registrar: r.clone(),
                times,
            }
            .severity()
        };
        assert_eq!(sev(1), Severity::Warn);
        assert_eq!(sev(2), Severity::Debug);
        assert_eq!(sev(10), Severity::Warn);
    }

    #[test]
    fn a_refusal_names_the_step_and_hints() {
        let e = Event::RegistrationRetry {
            step: Step::Create,
            retry_in: Duration::from_secs(2),
            answer: Some((Rsc::NOT_FOUND, "no such CSEBase".into())),
        };
        let text = e.to_string();
        assert!(text.contains("creating the own <remoteCSE>"), "{text}");
        assert!(text.contains("[registrar] name"), "{text}");
        assert_eq!(e.severity(), Severity::Warn);
    }
}
