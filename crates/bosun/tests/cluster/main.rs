//! Cluster tests: real `bosun` processes on loopback, real RocksDB, real mTLS.

mod bad_input;
mod basics;
mod etcdctl;
mod failover;
mod membership;
mod security;
mod snapshot;
mod util;
mod watch;
