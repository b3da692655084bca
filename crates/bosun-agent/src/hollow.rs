//! Hollow nodes: N simulated nodes in one process.

use bosun_api::json::At;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bosun_client::informer::Informer;
use bosun_client::{Client, Code};
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

fn exited_status(pod: &Value, code: i64) -> Value {
    let at = now();
    let reason = if code == 0 { "Completed" } else { "Error" };
    let containers: Vec<Value> = pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": false, "started": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": at}}}))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": at});
    json!({"status": {"phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [cond("Ready"), cond("ContainersReady")], "containerStatuses": containers}})
}

fn running_status(pod: &Value, host_ip: &str) -> Value {
    let at = now();
    let uid = pod
        .at("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let containers: Vec<Value> = pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": true, "started": true,
            "restartCount": 0, "containerID": format!("hollow://{uid}"), "state": {"running": {"startedAt": at}}}))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": at});
    json!({"status": {"phase": "Running", "podIP": pod_ip(uid), "podIPs": [{"ip": pod_ip(uid)}], "hostIP": host_ip,
        "startTime": at, "qosClass": "BestEffort",
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
    let names: BTreeSet<String> = (0..cfg.count)
        .map(|i| format!("{}-{i}", cfg.prefix))
        .collect();
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

    let (pods, informer) = Informer::start(client.clone(), "pods", cancel.clone());
    // Pods whose Running status (or final delete) was written; forgotten once the cache
    // shows it, or the pod is gone.
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let changed = pods.changed();
        let woken = changed.notified();
        let mine: Vec<_> = pods
            .list()
            .into_iter()
            .filter(|p| {
                names.contains(p.at("/spec/nodeName").and_then(Value::as_str).unwrap_or(""))
            })
            .collect();
        // Borrowed, and names copied below only for pods with something to do: a pass
        // looks at every pod of every node, and most are Running with nothing to do.
        let live: HashSet<&str> = mine
            .iter()
            .filter_map(|p| p.at("/metadata/uid").and_then(Value::as_str))
            .collect();
        done.retain(|a| a.split('/').next().is_some_and(|u| live.contains(u)));
        let mut set = JoinSet::new();
        // Running reports go in batches (one store transaction per few hundred pods):
        // (namespace, name, patch) and the action each stands for.
        let mut runs: Vec<(String, String, Value)> = Vec::new();
        let mut run_actions: Vec<String> = Vec::new();
        for p in &mine {
            let deleting = p.at("/metadata/deletionTimestamp").is_some();
            let phase = p.at("/status/phase").and_then(Value::as_str).unwrap_or("");
            let exit: Option<i64> = p
                .at("/metadata/annotations")
                .and_then(|a| a.get(EXIT_CODE))
                .and_then(Value::as_str)
                .and_then(|c| c.parse().ok());
            let step = match (deleting, phase, exit) {
                (true, _, _) => Step::Delete,
                (false, "Succeeded" | "Failed", _) => continue,
                (false, "Running", Some(code)) => Step::Exit(code),
                (false, "Running", None) => continue,
                (false, _, _) => Step::Run,
            };
            let text = |path: &str| p.at(path).and_then(Value::as_str).unwrap_or("").to_string();
            let (uid, ns, name) = (
                text("/metadata/uid"),
                text("/metadata/namespace"),
                text("/metadata/name"),
            );
            let action = format!("{uid}/{step:?}");
            if done.contains(&action) {
                continue;
            }
            done.insert(action.clone());
            if let Step::Run = step {
                let node = p.at("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
                let i: usize = node
                    .rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                runs.push((ns, name, running_status(p, &host_ip(i))));
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
            _ = woken => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    let _ = beats.await;
    let _ = informer.await;
    Ok(())
}
