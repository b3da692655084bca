//! One module per verb.

pub mod bench;
pub mod cluster;
pub mod objects;
pub mod pki;
pub mod server;
