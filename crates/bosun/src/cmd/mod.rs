//! One module per verb.

pub mod agent;
pub mod bench;
pub mod bench_api;
pub mod cluster;
pub mod io;
pub mod objects;
pub mod pki;
pub mod server;
pub mod workloads;
