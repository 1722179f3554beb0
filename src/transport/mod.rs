//! How primitives leave and reach the node.

pub mod mqtt;
