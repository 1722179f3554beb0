//! What goes into the engine and what comes out of it, besides events:
//! its settings, the transmits, the store batches (the driver contract is
//! the doc of [`super::Engine`]).

use super::durability::Ack;
use super::intersp::{HopIds, PeerSettings};
use super::registrar::RegistrarSettings;
use super::store::StoreChange;
use crate::id::CseId;
use crate::primitive::Format;
use crate::topic::{Link, Route};
use std::time::Duration;

/// The own registration, when this node has a registrar.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub registrar_rn: String,
    pub check_interval: Duration,
    /// The own `<remoteCSE>`'s `poa` when it is not the CSEBase's (the
    /// registrar reaches this node on another broker than registrees do).
    pub poa: Option<Vec<String>>,
    /// The link the registrar is reached on: [`Link::UPSTREAM`] when
    /// `[registrar.mqtt]` sets a broker of its own, else [`Link::LOCAL`].
    pub link: Link,
    /// `[registrar] serialization`: for a registrar that declares no `csz`.
    pub serialization: Option<Format>,
}

/// Everything the engine is configured with (built by `config.rs`).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub registrar: RegistrarSettings,
    pub registration: Option<UpstreamSettings>,
    pub registree_check_interval: Duration,
    /// How long an answer to this node's own requests may take.
    pub request_timeout: Duration,
    /// Answer changes only once they are committed by a persister.
    pub durable: bool,
    /// The largest payload this node may publish (`mqtt.max_payload`).
    pub max_payload: usize,
    /// Seeds rqis and jitter; any value unique per start.
    pub seed: u64,
    /// The IN-CSEs of other SPs this IN-CSE registers at (intersp.rs).
    pub peers: Vec<PeerSettings>,
}

/// Something to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Transmit {
    /// A request to the next-hop CSE `to`, on the broker connection `link`.
    Request {
        to: CseId,
        link: Link,
        format: Format,
        payload: Vec<u8>,
        /// The incoming request this one forwards: acknowledge after sending.
        ack: Option<Ack>,
        /// The topic's originator and receiver IDs when they are not this
        /// CSE's and `to` (a hop to another SP: docs/protocol.md §13).
        hop: Option<HopIds>,
    },
    /// An answer to the hop that sent the request on `to`.
    Response {
        to: Route,
        payload: Vec<u8>,
        ack: Option<Ack>,
    },
    /// Nothing to send; acknowledge the message.
    Ack(Ack),
}

/// A stored state the engine cannot start from (the reason).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidStore(pub String);

/// Changes for the persister; answer with [`Engine::store_committed`] or
/// [`Engine::store_failed`] and the same `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreBatch {
    pub seq: u64,
    pub changes: Vec<StoreChange>,
}
