//! The node agent: registers the Node, heartbeats it, caches the pods bound to it, runs
//! one [`Worker`](crate::worker::Worker) per pod, and removes containers whose pods are
//! gone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Changes, Informer};
use bosun_client::{Client, Code, Query};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::lease;
use crate::pod::LABEL_AGENT;
use crate::runtime::ContainerRuntime;
use crate::worker::{teardown, Worker};
use crate::Settings;

/// How long the heartbeat waits for the runtime to answer before reporting it unhealthy.
const RUNTIME_CHECK: Duration = Duration::from_secs(3);
/// How often containers of vanished pods are looked for.
const ORPHAN_SWEEP: Duration = Duration::from_secs(10);

/// What can stop the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container runtime could not be prepared.
    #[error("container runtime: {0}")]
    Runtime(#[from] crate::runtime::Error),
    /// The Node could not be registered.
    #[error("registering node {node:?}: {source}")]
    Register {
        /// The node.
        node: String,
        /// The API's answer.
        #[source]
        source: bosun_client::Error,
    },
}

/// The Node this agent registers.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Labels (besides `kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`).
    pub labels: BTreeMap<String, String>,
    /// Taints set when the Node is first registered (as the kubelet's
    /// `--register-with-taints`); later changes by an administrator are kept.
    pub taints: Vec<Value>,
    /// Allocatable cpu (a quantity).
    pub cpu: String,
    /// Allocatable memory (a quantity).
    pub memory: String,
    /// Pods at most.
    pub pods: u32,
    /// Lease renewal and status interval.
    pub heartbeat: Duration,
    /// The container runtime's version, for `nodeInfo`.
    pub runtime_version: String,
    /// The port `bosun logs`/`exec` reach the agent on (0: none).
    pub port: u16,
}

fn node_status(s: &Settings, n: &NodeSpec, runtime_ok: Result<(), String>) -> Value {
    let at = lease::now();
    let (status, reason, message) = match &runtime_ok {
        Ok(()) => (
            "True",
            "AgentReady",
            "bosun agent is posting ready status".to_string(),
        ),
        Err(e) => (
            "False",
            "ContainerRuntimeUnhealthy",
            format!("container runtime: {e}"),
        ),
    };
    let res = json!({"cpu": n.cpu, "memory": n.memory, "pods": n.pods.to_string()});
    json!({
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": at, "lastTransitionTime": at}],
        "addresses": [{"type": "InternalIP", "address": s.host_ip}, {"type": "Hostname", "address": s.node}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": n.port}},
        "nodeInfo": {"kubeletVersion": concat!("bosun-", env!("CARGO_PKG_VERSION")),
            "containerRuntimeVersion": n.runtime_version, "osImage": "linux",
            "kernelVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
    })
}

fn arch_label() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

async fn register(client: &Client, s: &Settings, n: &NodeSpec) -> bosun_client::Result<()> {
    let mut labels = n.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), s.node.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), arch_label().into());
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": s.node, "labels": labels},
        "spec": {"taints": n.taints},
        "status": node_status(s, n, Ok(()))});
    match client.create("nodes", "", &node).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(Code::AlreadyExists) => {
            // Re-registration: our labels, not the taints (an administrator may have
            // changed them).
            client
                .patch(
                    "nodes",
                    "",
                    &s.node,
                    "",
                    &json!({"metadata": {"labels": labels}}),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    heartbeat(client, s, n, Ok(())).await
}

async fn heartbeat(
    client: &Client,
    s: &Settings,
    n: &NodeSpec,
    runtime_ok: Result<(), String>,
) -> bosun_client::Result<()> {
    lease::renew(client, &s.node, (n.heartbeat.as_secs() * 4).max(10)).await?;
    client
        .patch(
            "nodes",
            "",
            &s.node,
            "status",
            &json!({"status": node_status(s, n, runtime_ok)}),
        )
        .await
        .map(|_| ())
}

/// Runs the agent until `cancel`: the containers stay running when it stops, and the next
/// agent for this node adopts them.
///
/// # Errors
/// When the runtime's network cannot be made or the Node cannot be registered.
pub async fn run<R: ContainerRuntime>(
    rt: Arc<R>,
    client: Client,
    settings: Arc<Settings>,
    node: NodeSpec,
    cancel: CancellationToken,
) -> Result<(), Error> {
    rt.ensure_network(&settings.network).await?;
    tracing::info!(node = %settings.node, "registering node");
    match until_registered(&cancel, || register(&client, &settings, &node)).await {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => {
            return Err(Error::Register {
                node: settings.node.clone(),
                source: e,
            })
        }
    }
    tracing::info!(node = %settings.node, "node registered");

    let mut tasks = JoinSet::new();
    {
        let (rt, client, s, n, cancel) = (
            rt.clone(),
            client.clone(),
            settings.clone(),
            node.clone(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(n.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // A slow runtime must not stop the heartbeat: the node then says it is
                // not Ready, but stays reachable (its pods are not evicted for it).
                let ok = match tokio::time::timeout(
                    RUNTIME_CHECK,
                    rt.summaries(LABEL_AGENT, &s.agent_id),
                )
                .await
                {
                    Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {RUNTIME_CHECK:?}")),
                };
                if let Err(e) = &ok {
                    tracing::warn!(error = %e, "container runtime unhealthy");
                }
                match tokio::time::timeout(n.heartbeat * 4, heartbeat(&client, &s, &n, ok)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "heartbeat failed; next at the next tick")
                    }
                    Err(_) => tracing::warn!("heartbeat timed out; next at the next tick"),
                }
            }
        });
    }

    {
        let (rt, s, cancel) = (rt.clone(), settings.clone(), cancel.clone());
        tasks.spawn(async move { rt.follow_events(LABEL_AGENT, &s.agent_id, cancel).await });
    }
    // The containers this agent already runs (after a restart: adopted, not restarted).
    let cache = Cache::new(rt.clone(), &settings.agent_id);
    cache.relist().await?;
    tasks.spawn(cache.clone().run(cancel.clone()));
    let q = Query {
        resource: "pods".into(),
        fields: format!("spec.nodeName={}", settings.node),
        ..Default::default()
    };
    let (pods, informer) =
        Informer::<serde_json::Value>::start_query(client.clone(), q, cancel.clone());
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut running: JoinSet<String> = JoinSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut sweep = tokio::time::interval(ORPHAN_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let worker_cancel = cancel.child_token();
    let mut first_sweep = true;
    pods.wait_synced().await;
    let mut changes = Changes::new(vec![pods.subscribe()]);
    loop {
        let mut seen: HashSet<String> = HashSet::new();
        for obj in pods.list() {
            let pod: Pod = match serde_json::from_value((*obj).clone()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "a pod bound to this node does not decode; skipped");
                    continue;
                }
            };
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            seen.insert(uid.clone());
            if finished.contains(&uid) {
                // Its worker deleted it; the cache has not caught up yet.
                continue;
            }
            let pod = Arc::new(pod);
            match workers.get(&uid) {
                Some(tx) => {
                    let fresh = tx
                        .borrow()
                        .as_ref()
                        .map(|p| p.metadata.resource_version.clone())
                        != Some(pod.metadata.resource_version.clone());
                    if fresh {
                        let _ = tx.send(Some(pod));
                    }
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod));
                    let w = Worker::new(
                        rt.clone(),
                        cache.clone(),
                        client.clone(),
                        settings.clone(),
                        rx,
                    );
                    let c = worker_cancel.clone();
                    let id = uid.clone();
                    running.spawn(async move {
                        w.run(c).await;
                        id
                    });
                    workers.insert(uid, tx);
                }
            }
        }
        finished.retain(|uid| seen.contains(uid));
        for (uid, tx) in &workers {
            if !seen.contains(uid) && tx.borrow().is_some() {
                let _ = tx.send(None);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next() => {}
            Some(done) = running.join_next() => {
                                if let Ok(uid) = done {
                    workers.remove(&uid);
                    cache.drop_waker(&uid);
                    finished.insert(uid);
                }
            }
            _ = sweep.tick() => {
                let (kept, removed) = sweep_orphans(rt.as_ref(), &cache, &settings, &workers).await;
                if first_sweep {
                    first_sweep = false;
                    tracing::info!(adopted = kept, orphan_pods_removed = removed, "startup sweep done");
                }
            }
        }
    }
    worker_cancel.cancel();
    while running.join_next().await.is_some() {}
    while tasks.join_next().await.is_some() {}
    let _ = informer.await;
    Ok(())
}

/// Removes containers (and pod directories) of this agent whose pods have no worker: the
/// pod was deleted while no agent ran. Returns (containers kept, orphan pods removed).
async fn sweep_orphans<R: ContainerRuntime>(
    rt: &R,
    cache: &Cache<R>,
    s: &Settings,
    workers: &HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
) -> (usize, usize) {
    let uids = cache.pod_uids();
    let kept = uids.iter().filter(|u| workers.contains_key(*u)).count();
    let mut orphans: HashSet<String> = uids
        .into_iter()
        .filter(|uid| !workers.contains_key(uid))
        .collect();
    if let Ok(mut dir) = tokio::fs::read_dir(s.root.join("pods")).await {
        while let Ok(Some(e)) = dir.next_entry().await {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !workers.contains_key(&uid) {
                orphans.insert(uid);
            }
        }
    }
    let removed = orphans.len();
    for uid in orphans {
        tracing::info!(pod_uid = %uid, "removing the containers of a pod that no longer exists");
        teardown(rt, s, &uid, Duration::ZERO).await;
    }
    (kept, removed)
}

/// Runs `register` until it succeeds, as the kubelet does: jittered back-off from 200 ms
/// doubling to 10 s, for any failure but a refusal (a node certificate the API server
/// rejects, an invalid object). At a cluster's start a server may still lack a leader, or
/// the `kube-node-lease` namespace its bootstrap creates. `Ok(false)` when `cancel` came
/// first.
///
/// # Errors
/// The refusal.
pub async fn until_registered<F, Fut>(
    cancel: &CancellationToken,
    mut register: F,
) -> Result<bool, bosun_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), bosun_client::Error>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match register().await {
            Ok(()) => return Ok(true),
            Err(e)
                if matches!(
                    e.code(),
                    Some(Code::PermissionDenied | Code::InvalidArgument | Code::Unauthenticated)
                ) =>
            {
                return Err(e)
            }
            Err(e) => {
                let wait = backoff.mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::warn!(error = %e, backoff = ?wait, "registering failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[tokio::test]
    async fn registration_is_retried_until_it_succeeds_and_a_refusal_is_final() {
        let cancel = CancellationToken::new();
        // Two transient failures (no namespace yet, no leader yet), then success.
        let mut calls = 0;
        let done = until_registered(&cancel, || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 => Err(Status::not_found("namespaces \"kube-node-lease\" not found").into()),
                    2 => Err(Status::unavailable("no leader").into()),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert!(matches!(done, Ok(true)), "{done:?}");
        assert_eq!(calls, 3);

        let mut calls = 0;
        let refused = until_registered(&cancel, || {
            calls += 1;
            async { Err(Status::permission_denied("not this node").into()) }
        })
        .await;
        assert_eq!(
            refused.err().and_then(|e| e.code()),
            Some(Code::PermissionDenied)
        );
        assert_eq!(calls, 1);

        // A stopping agent stops retrying (bounded, so that one that does not fails).
        cancel.cancel();
        let stopped = tokio::time::timeout(
            Duration::from_secs(5),
            until_registered(&cancel, || async {
                Err(Status::unavailable("no leader").into())
            }),
        )
        .await;
        assert!(matches!(stopped, Ok(Ok(false))), "{stopped:?}");
    }
}
