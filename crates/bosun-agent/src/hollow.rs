//! Hollow nodes: N simulated nodes in one process.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bosun_client::informer::{null_as_default, Cached, Changes, Informer};
use bosun_client::{Client, Code};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often each node renews its Lease and Ready condition, by default.
pub const HEARTBEAT: Duration = Duration::from_millis(2500);
/// Status writes in flight at most.
const IN_FLIGHT: usize = 32;
/// Shortest time between two rounds of heartbeats (each round beats a share of the nodes).
const BEAT_TICK: Duration = Duration::from_millis(10);

/// What the hollow nodes look like.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node names are `<prefix>-<i>`.
    pub prefix: String,
    /// How many.
    pub count: usize,
    /// Allocatable cpu per node (a Kubernetes quantity).
    pub cpu: String,
    /// Allocatable memory per node.
    pub memory: String,
    /// Pods per node.
    pub pods: u32,
    /// How often each node renews its Lease and Ready condition.
    pub heartbeat: Duration,
}

use crate::lease::now;

fn node_status(cfg: &Config, i: usize) -> Value {
    let at = now();
    json!({
        "capacity": {"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string()},
        "allocatable": {"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string()},
        "conditions": [{"type": "Ready", "status": "True", "reason": "HollowReady",
            "message": "hollow node is posting ready status", "lastHeartbeatTime": at, "lastTransitionTime": at}],
        "addresses": [{"type": "InternalIP", "address": host_ip(i)},
            {"type": "Hostname", "address": format!("{}-{i}", cfg.prefix)}],
        "nodeInfo": {"kubeletVersion": "bosun-hollow", "containerRuntimeVersion": "hollow://0", "osImage": "hollow",
            "kernelVersion": "hollow", "operatingSystem": "linux", "architecture": "amd64",
            "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
    })
}

async fn register(client: &Client, cfg: &Config, i: usize) -> bosun_client::Result<()> {
    let name = format!("{}-{i}", cfg.prefix);
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "bosun.io/hollow": "true"}},
        "status": node_status(cfg, i)});
    match client.create("nodes", "", &node).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(Code::AlreadyExists) => {}
        Err(e) => return Err(e),
    }
    heartbeat(client, cfg, i).await
}

async fn heartbeat(client: &Client, cfg: &Config, i: usize) -> bosun_client::Result<()> {
    let name = format!("{}-{i}", cfg.prefix);
    crate::lease::renew(client, &name, cfg.heartbeat.as_secs() * 4).await?;
    client
        .patch(
            "nodes",
            "",
            &name,
            "status",
            &json!({"status": node_status(cfg, i)}),
        )
        .await
        .map(|_| ())
}

/// The address hollow node `i` reports.
fn host_ip(i: usize) -> String {
    format!(
        "10.{}.{}.{}",
        200 + (i / 65_536) % 50,
        (i / 256) % 256,
        i % 256
    )
}

fn pod_ip(uid: &str) -> String {
    let h = uid
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!(
        "10.{}.{}.{}",
        128 + (h >> 16) % 64,
        (h >> 8) % 256,
        2 + h % 250
    )
}

/// The annotation that makes a hollow pod's containers exit with this code once running
/// (for Jobs: "0" succeeds, anything else fails).
pub const EXIT_CODE: &str = "bosun.io/hollow-exit-code";

/// What the hollow agent does next for one pod.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Report it running.
    Run,
    /// Report its containers exited with this code.
    Exit(i64),
    /// Finish its deletion.
    Delete,
}

/// What the hollow agent reads of a pod: it watches every pod of the cluster, so it
/// decodes only these fields (serde skips the rest without building them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HollowPod {
    #[serde(deserialize_with = "null_as_default")]
    metadata: PodMeta,
    #[serde(deserialize_with = "null_as_default")]
    spec: PodSpec,
    #[serde(deserialize_with = "null_as_default")]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodMeta {
    #[serde(deserialize_with = "null_as_default")]
    name: String,
    #[serde(deserialize_with = "null_as_default")]
    namespace: String,
    #[serde(deserialize_with = "null_as_default")]
    uid: String,
    #[serde(deserialize_with = "null_as_default")]
    resource_version: String,
    deletion_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    #[serde(deserialize_with = "null_as_default")]
    node_name: String,
    #[serde(deserialize_with = "null_as_default")]
    containers: Vec<Container>,
    #[serde(deserialize_with = "null_as_default")]
    init_containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Container {
    name: Value,
    image: Value,
    #[serde(deserialize_with = "null_as_default")]
    resources: Resources,
}

/// A container's requests and limits (quantities as the API stores them: strings).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Resources {
    #[serde(deserialize_with = "null_as_default")]
    requests: BTreeMap<String, Value>,
    #[serde(deserialize_with = "null_as_default")]
    limits: BTreeMap<String, Value>,
}

impl HollowPod {
    /// Its QoS class, as the Docker agent reports it.
    fn qos_class(&self) -> &'static str {
        let spec = &self.spec;
        crate::pod::qos_class(
            spec.init_containers
                .iter()
                .chain(&spec.containers)
                .map(|c| {
                    let r = &c.resources;
                    crate::pod::Asks::read(Some(&r.requests), Some(&r.limits), |m, k| {
                        m.get(k).and_then(Value::as_str)
                    })
                }),
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodStatus {
    #[serde(deserialize_with = "null_as_default")]
    phase: String,
}

impl Cached for HollowPod {
    fn cache_key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
    fn resource_version(&self) -> i64 {
        self.metadata.resource_version.parse().unwrap_or(0)
    }
    fn controller_uid(&self) -> Option<&str> {
        None
    }
}

/// The index of the hollow node `node` names, if it is one of ours (`<prefix>-<i>`,
/// `i < count`, written as `format!` writes it).
fn node_index(prefix: &str, count: usize, node: &str) -> Option<usize> {
    let digits = node.strip_prefix(prefix)?.strip_prefix('-')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let i: usize = digits.parse().ok().filter(|_| canonical)?;
    (i < count).then_some(i)
}

fn exited_status(pod: &HollowPod, code: i64) -> Value {
    let at = now();
    let reason = if code == 0 { "Completed" } else { "Error" };
    let containers: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": at}}}))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": at});
    json!({"status": {"phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [cond("Ready"), cond("ContainersReady")], "containerStatuses": containers}})
}

fn running_status(pod: &HollowPod, host_ip: &str) -> Value {
    let at = now();
    let uid = pod.metadata.uid.as_str();
    let containers: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
            "restartCount": 0, "containerID": format!("hollow://{uid}"), "state": {"running": {"startedAt": at}}}))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": at});
    json!({"status": {"phase": "Running", "podIP": pod_ip(uid), "podIPs": [{"ip": pod_ip(uid)}], "hostIP": host_ip,
        "startTime": at, "qosClass": pod.qos_class(),
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": containers}})
}

/// Registers the nodes, then heartbeats them and runs their pods (hollowly) until `cancel`.
///
/// # Errors
/// When the nodes cannot be registered.
pub async fn run(
    client: Client,
    cfg: Config,
    cancel: CancellationToken,
) -> bosun_client::Result<()> {
    let mut set = JoinSet::new();
    // Each node is registered as a real agent registers its own: retried with back-off
    // until it succeeds (a cluster that has just started may still be creating the
    // kube-node-lease namespace), only a refusal is final.
    for i in 0..cfg.count {
        while set.len() >= IN_FLIGHT {
            if let Some(r) = set.join_next().await {
                r.map_err(|e| bosun_client::Error::Setup(e.to_string()))??;
            }
        }
        let (client, cfg, cancel) = (client.clone(), cfg.clone(), cancel.clone());
        set.spawn(async move {
            crate::node::until_registered(&cancel, || register(&client, &cfg, i))
                .await
                .map(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| bosun_client::Error::Setup(e.to_string()))??;
    }
    if cancel.is_cancelled() {
        return Ok(());
    }
    tracing::info!(nodes = cfg.count, prefix = %cfg.prefix, "hollow nodes registered");

    let beats = {
        let (client, cfg, cancel) = (client.clone(), cfg.clone(), cancel.clone());
        tokio::spawn(async move {
            // Each node beats once a period, the nodes spread evenly over it (real nodes
            // each keep their own clock), not all at once: a burst of thousands of writes
            // every period is not what a cluster sees.
            let count = cfg.count.max(1);
            let tick_every = (cfg.heartbeat / count as u32).max(BEAT_TICK);
            let per_tick = (count as f64 * tick_every.as_secs_f64()
                / cfg.heartbeat.as_secs_f64().max(1e-3))
            .ceil()
            .max(1.0) as usize;
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut set = JoinSet::new();
            let mut next = 0usize;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                while set.try_join_next().is_some() {}
                for _ in 0..per_tick {
                    if set.len() >= IN_FLIGHT {
                        // Behind: this round's remaining nodes wait for the next tick.
                        break;
                    }
                    let (client, cfg, i) = (client.clone(), cfg.clone(), next);
                    next = (next + 1) % count;
                    set.spawn(async move {
                        if let Err(e) = heartbeat(&client, &cfg, i).await {
                            tracing::debug!(error = %e, node = i, "heartbeat failed");
                        }
                    });
                }
            }
        })
    };

    let (pods, informer) = Informer::<HollowPod>::start(client.clone(), "pods", cancel.clone());
    // Pods whose Running status (or final delete) was written; forgotten once the cache
    // shows it, or the pod is gone.
    let mut done: HashSet<String> = HashSet::new();
    let mut changes = Changes::new(vec![pods.subscribe()]);
    loop {
        let mine: Vec<_> = pods
            .list()
            .into_iter()
            .filter_map(|p| node_index(&cfg.prefix, cfg.count, &p.spec.node_name).map(|i| (i, p)))
            .collect();
        // Borrowed, and names copied below only for pods with something to do: a pass
        // looks at every pod of every node, and most are Running with nothing to do.
        let live: HashSet<&str> = mine.iter().map(|(_, p)| p.metadata.uid.as_str()).collect();
        done.retain(|a| a.split('/').next().is_some_and(|u| live.contains(u)));
        let mut set = JoinSet::new();
        // Running reports go in batches (one store transaction per few hundred pods):
        // (namespace, name, patch) and the action each stands for.
        let mut runs: Vec<(String, String, Value)> = Vec::new();
        let mut run_actions: Vec<String> = Vec::new();
        for (i, p) in &mine {
            let deleting = p.metadata.deletion_timestamp.is_some();
            let phase = p.status.phase.as_str();
            let exit: Option<i64> = p
                .metadata
                .annotations
                .get(EXIT_CODE)
                .and_then(Value::as_str)
                .and_then(|c| c.parse().ok());
            let step = match (deleting, phase, exit) {
                (true, _, _) => Step::Delete,
                (false, "Succeeded" | "Failed", _) => continue,
                (false, "Running", Some(code)) => Step::Exit(code),
                (false, "Running", None) => continue,
                (false, _, _) => Step::Run,
            };
            let (uid, ns, name) = (
                p.metadata.uid.clone(),
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
            );
            let action = format!("{uid}/{step:?}");
            if done.contains(&action) {
                continue;
            }
            done.insert(action.clone());
            if let Step::Run = step {
                runs.push((ns, name, running_status(p, &host_ip(*i))));
                run_actions.push(action);
                continue;
            }
            while set.len() >= IN_FLIGHT {
                if let Some(Ok(Some(failed))) = set.join_next().await {
                    done.remove(&failed);
                }
            }
            let (client, p) = (client.clone(), p.clone());
            set.spawn(async move {
                let res = match step {
                    // Nothing to stop: the pod's grace period is over at once.
                    Step::Delete => client.delete("pods", &ns, &name, Some(0)).await.map(|_| ()),
                    // Batched above.
                    Step::Run => Ok(()),
                    Step::Exit(code) => client
                        .patch("pods", &ns, &name, "status", &exited_status(&p, code))
                        .await
                        .map(|_| ()),
                };
                match res {
                    Err(e) if e.code() != Some(Code::NotFound) => {
                        tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "hollow pod update failed; retrying");
                        // Forgotten, so the next pass tries again.
                        Some(action)
                    }
                    _ => None,
                }
            });
        }
        let mut retry = false;
        if !runs.is_empty() {
            // Only the outcomes are needed: brief answers.
            let failed: Vec<bool> = match client.brief().patch_batch("pods", "status", &runs).await
            {
                Ok(results) => results
                    .iter()
                    .map(|r| matches!(r, Err(e) if e.code() != Some(Code::NotFound)))
                    .collect(),
                Err(e) => {
                    tracing::debug!(pods = runs.len(), error = %e, "hollow status batch failed; retrying");
                    vec![true; runs.len()]
                }
            };
            for (action, failed) in run_actions.into_iter().zip(failed) {
                if failed {
                    done.remove(&action);
                    retry = true;
                }
            }
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(failed)) = r {
                done.remove(&failed);
                retry = true;
            }
        }
        // A failed update (a server went away) is retried after a short pause.
        let pause = if retry {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next() => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    let _ = beats.await;
    let _ = informer.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_nodes_by_their_canonical_names() {
        assert_eq!(node_index("h", 10, "h-0"), Some(0));
        assert_eq!(node_index("h", 10, "h-9"), Some(9));
        for other in ["h-10", "h-01", "h-+1", "h-", "h", "g-1", "h-1x", "hh-1", ""] {
            assert_eq!(node_index("h", 10, other), None, "{other}");
        }
        // A prefix with dashes of its own.
        assert_eq!(node_index("a-b", 3, "a-b-2"), Some(2));
    }

    #[test]
    fn a_hollow_pod_reads_its_fields_and_skips_the_rest() {
        let pod: HollowPod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "42",
                "deletionTimestamp": "2026-12-07T00:00:00Z", "labels": {"a": "b"},
                "annotations": {EXIT_CODE: "3", "other": "x"}},
            "spec": {"nodeName": "h-1", "containers": [{"name": "c", "image": "i", "resources": {}}],
                "tolerations": [{"key": "k"}]},
            "status": {"phase": "Running", "conditions": []}}))
        .unwrap();
        assert_eq!(pod.cache_key(), "ns/p");
        assert_eq!(pod.resource_version(), 42);
        assert!(pod.metadata.deletion_timestamp.is_some());
        assert_eq!(pod.metadata.annotations[EXIT_CODE], "3");
        assert_eq!(pod.status.phase, "Running");
        let running = running_status(&pod, "10.0.0.1");
        assert_eq!(running["status"]["containerStatuses"][0]["name"], "c");
        assert_eq!(running["status"]["containerStatuses"][0]["image"], "i");
        assert_eq!(
            running["status"]["containerStatuses"][0]["containerID"],
            "hollow://u1"
        );
        assert_eq!(running["status"]["qosClass"], "BestEffort");
        // The QoS class as the Docker agent reports it, init containers included.
        let asking = |resources: Value, init: Value| -> HollowPod {
            serde_json::from_value(json!({"metadata": {"name": "q", "uid": "u2"},
                "spec": {"containers": [{"name": "c", "resources": resources}],
                    "initContainers": init}}))
            .unwrap()
        };
        let limits = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        for (resources, init, class) in [
            (
                json!({"requests": {"cpu": "10m", "memory": "16Mi"}}),
                json!(null),
                "Burstable",
            ),
            (limits.clone(), json!([]), "Guaranteed"),
            (
                limits.clone(),
                json!([{"name": "i", "resources": {"requests": {"cpu": "1m"}}}]),
                "Burstable",
            ),
            (json!(null), json!(null), "BestEffort"),
        ] {
            let pod = asking(resources.clone(), init);
            assert_eq!(
                running_status(&pod, "10.0.0.1")["status"]["qosClass"],
                class,
                "{resources}"
            );
        }
        // An ERROR or BOOKMARK event's object (no pod fields) still decodes.
        let status: HollowPod =
            serde_json::from_value(json!({"kind": "Status", "code": 410})).unwrap();
        assert_eq!(status.resource_version(), 0);
        // Nulls read as absent fields.
        let nulls: HollowPod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": null, "uid": null},
            "spec": {"nodeName": null, "containers": null}, "status": null}))
        .unwrap();
        assert_eq!(nulls.cache_key(), "/p");
        assert!(nulls.spec.node_name.is_empty() && nulls.spec.containers.is_empty());
    }
}
