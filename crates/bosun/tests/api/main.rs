//! API server tests: real `bosun` servers on loopback, real mTLS clients with their own
//! certificates, Kubernetes objects through the resource API and the CLI.

mod batch;
mod cli;
mod control;
mod crud;
mod rbac;
mod secrets;
mod util;
mod watch;
