//! Cluster tests: real `bosun` processes on loopback, real RocksDB, real mTLS.

mod bad_input;
mod basics;
mod etcdctl;
mod failover;
mod large_values;
mod membership;
mod security;
mod snapshot;
mod util;
mod watch;
