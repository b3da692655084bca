//! bosun's node agent. This release has the hollow agent only ([`hollow`]): simulated
//! nodes that register, heartbeat and report the pods bound to them as running, without
//! Docker — as Kubernetes' kubemark does — so the control plane can be tested and
//! measured at scale. The Docker agent comes next.
#![forbid(unsafe_code)]

pub mod hollow;
