//! How primitives leave and reach the node.

mod ack_order;
pub mod mqtt;
