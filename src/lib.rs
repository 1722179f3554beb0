//! m2mnode: an MQTT-bound oneM2M interworking node, as a library for
//! embedders and tests of the engine.
//!
//! Every protocol decision is made in [`engine`], a sans-IO state machine
//! (inputs with `now`, outputs polled; the driver contract is the doc of
//! [`engine::Engine`]). The `m2mnode` binary drives it with tokio, an MQTT
//! transport per broker link and a [`persist`] backend, and decides
//! nothing; those parts are private to the binary.

pub mod config;
pub mod engine;
pub mod error;
pub mod id;
pub mod persist;
pub mod primitive;
pub mod reload;
pub mod resource;
pub mod time;
pub mod topic;
