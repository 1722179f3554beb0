//! m2mnode: an MQTT-bound oneM2M interworking node.
//!
//! The protocol core is sans-IO: [`registrar`] (requests in, answers out) and
//! [`registration`] (events and time in, actions out) do no I/O and read no
//! clock. [`node`] drives them with tokio and [`transport::mqtt`].

pub mod broker;
pub mod cli;
pub mod config;
pub mod dedupe;
pub mod demo;
pub mod error;
pub mod id;
pub mod node;
pub mod primitive;
pub mod registrar;
pub mod registration;
pub mod resource;
pub mod time;
pub mod topic;
pub mod transport;
