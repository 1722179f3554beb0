//! m2mnode: an MQTT-bound oneM2M interworking node.
//!
//! Every protocol decision is made in [`engine`], a sans-IO state machine
//! (inputs with `now`, outputs polled). [`node`] drives it with tokio,
//! [`transport::mqtt`] and a [`persist`] backend, and decides nothing.

pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod id;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod primitive;
pub mod resource;
pub mod sdnotify;
pub mod time;
pub mod topic;
pub mod transport;
