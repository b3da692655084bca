//! Leader-only work with hollow nodes: the scheduler binds, the ReplicaSet controller keeps
//! the count, through a leader kill; fenced writes of a deposed term are refused.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::time::Duration;

use bosun_client::{Client, Code};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::util::*;

/// A `bosun agent --hollow N` process, killed on drop.
struct Hollow(Child);

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hollow(c: &Cluster, n: usize) -> Hollow {
    hollow_named(c, "hollow", n)
}

/// Hollow nodes `<prefix>-<i>`, heartbeating every 300 ms.
fn hollow_named(c: &Cluster, prefix: &str, n: usize) -> Hollow {
    let log = std::fs::File::create(c.dir.path().join(format!("hollow-{prefix}.log"))).unwrap();
    Hollow(
        Command::new(bin())
            .args([
                "agent",
                "--hollow",
                &n.to_string(),
                "--prefix",
                prefix,
                "--heartbeat-ms",
                "300",
            ])
            .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

async fn wait_nodes(client: &Client, n: usize) {
    eventually(
        Duration::from_secs(20),
        "hollow nodes registered",
        || async { (client.list(&query("nodes", "")).await.ok()?.items.len() == n).then_some(()) },
    )
    .await
    .unwrap();
}

fn replicaset(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"rs": name}},
            "template": {"metadata": {"labels": {"rs": name}},
                "spec": {"containers": [{"name": "c", "image": "bosun/busybox:latest", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
}

fn active_running(pods: &[Value], rs: &str) -> Vec<Value> {
    pods.iter()
        .filter(|p| p["metadata"]["labels"]["rs"] == rs)
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .filter(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"].is_string())
        .cloned()
        .collect()
}

async fn wait_running(client: &Client, rs: &str, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} running pods of {rs}"),
        || async {
            let pods = client.list_all(&query("pods", "default")).await.ok()?.items;
            let all: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    p["metadata"]["labels"]["rs"] == rs
                        && p["metadata"].get("deletionTimestamp").is_none()
                })
                .collect();
            let running = active_running(&pods, rs);
            (running.len() == n && all.len() == n).then_some(running)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicaset_is_scheduled_and_kept_at_its_count() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 4);
    wait_nodes(&client, 4).await;
    client
        .create("replicasets", "default", &replicaset("web", 3))
        .await
        .unwrap();
    let pods = wait_running(&client, "web", 3).await;
    let nodes: HashSet<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "replicas spread over nodes: {nodes:?}");
    assert!(nodes.iter().all(|n| n.starts_with("hollow-")));

    // A deleted pod is replaced.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    client
        .delete("pods", "default", &victim, Some(0))
        .await
        .unwrap();
    let again = wait_running(&client, "web", 3).await;
    assert!(again
        .iter()
        .all(|p| p["metadata"]["name"] != victim.as_str()));

    // Scale up and down.
    client
        .patch(
            "replicasets",
            "default",
            "web",
            "",
            &json!({"spec": {"replicas": 8}}),
        )
        .await
        .unwrap();
    wait_running(&client, "web", 8).await;
    client
        .patch(
            "replicasets",
            "default",
            "web",
            "",
            &json!({"spec": {"replicas": 2}}),
        )
        .await
        .unwrap();
    wait_running(&client, "web", 2).await;
    let status = eventually(Duration::from_secs(20), "status caught up", || async {
        let rs = client.get("replicasets", "default", "web").await.ok()?;
        (rs["status"]["readyReplicas"] == 2 && rs["status"]["replicas"] == 2).then_some(rs)
    })
    .await
    .unwrap();
    assert_eq!(
        status["status"]["observedGeneration"],
        status["metadata"]["generation"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scale_up_survives_a_leader_kill_without_ever_overshooting() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 5);
    client
        .create("replicasets", "default", &replicaset("big", 2))
        .await
        .unwrap();
    wait_running(&client, "big", 2).await;
    // Count live pods of the ReplicaSet at every change, on a follower: the leader is
    // about to be killed.
    let leader = c.leader(&ALL).await.unwrap();
    let follower = *ALL.iter().find(|n| **n != leader.as_str()).unwrap();
    let watcher = client_of(&c, &[follower], &c.admin_tls());
    let mut q = query("pods", "default");
    q.labels = "rs=big".into();
    let mut stream = Box::pin(watcher.watch(&q, "", false).await.unwrap());
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = most.clone();
    let counter = tokio::spawn(async move {
        let mut live: HashSet<String> = HashSet::new();
        while let Some(Ok(ev)) = stream.next().await {
            let uid = ev.object["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let gone =
                ev.kind == "DELETED" || ev.object["metadata"].get("deletionTimestamp").is_some();
            if gone {
                live.remove(&uid);
            } else {
                live.insert(uid);
            }
            seen.fetch_max(live.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    client
        .patch(
            "replicasets",
            "default",
            "big",
            "",
            &json!({"spec": {"replicas": 30}}),
        )
        .await
        .unwrap();
    c.ctl(&["kill", &leader]).unwrap();
    wait_running(&client, "big", 30).await;
    // The watcher sees every pod (the count is exact, so the check below can fail).
    eventually(
        Duration::from_secs(10),
        "the watcher saw 30 pods",
        || async { (most.load(std::sync::atomic::Ordering::SeqCst) >= 30).then_some(()) },
    )
    .await
    .unwrap();
    counter.abort();
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        most, 30,
        "the ReplicaSet had {most} live pods at some point, more than 30"
    );
    let new_leader = c.leader(&ALL).await.unwrap();
    assert_ne!(new_leader, leader);
    assert!(c.log(&new_leader).contains("leader-only work started"));
    let out = Command::new(bin())
        .args(["cluster", "status"])
        .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "scheduler and controllers: on the leader, {new_leader}"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unschedulable_pod_gets_an_event_naming_why() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 3);
    eventually(Duration::from_secs(20), "hollow nodes", || async {
        (client.list(&query("nodes", "")).await.ok()?.items.len() == 3).then_some(())
    })
    .await
    .unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "picky", "namespace": "default"},
        "spec": {"nodeSelector": {"disk": "nvme"}, "containers": [{"name": "c", "image": "bosun/busybox:latest"}]}});
    client.create("pods", "default", &pod).await.unwrap();
    let huge = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "bosun/busybox:latest", "resources": {"requests": {"memory": "64Gi"}}}]}});
    client.create("pods", "default", &huge).await.unwrap();
    for (pod, why) in [
        (
            "picky",
            "3 node(s) didn't match Pod's node affinity/selector",
        ),
        ("huge", "3 Insufficient memory"),
    ] {
        let msg = eventually(
            Duration::from_secs(20),
            "FailedScheduling event",
            || async {
                let mut q = query("events", "default");
                q.fields = format!("involvedObject.name={pod},reason=FailedScheduling");
                let evs = client.list(&q).await.ok()?.items;
                evs.first()
                    .and_then(|e| e["message"].as_str().map(str::to_string))
            },
        )
        .await
        .unwrap();
        assert_eq!(msg, format!("0/3 nodes are available: {why}."));
        let p = client.get("pods", "default", pod).await.unwrap();
        assert!(p["spec"].get("nodeName").is_none(), "{pod} was bound");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_fenced_by_a_deposed_term_is_refused() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let mut m = c.maintenance("s1").unwrap();
    let term = m
        .status(bosun_api::etcd::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .raft_term;
    let stale = client.with_fence(term - 1);
    let err = stale
        .create(
            "configmaps",
            "default",
            &configmap("default", "stale", json!({})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    assert_eq!(
        client
            .get("configmaps", "default", "stale")
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );
    // The current term's writes go through.
    client
        .with_fence(term)
        .create(
            "configmaps",
            "default",
            &configmap("default", "fresh", json!({})),
        )
        .await
        .unwrap();
}

fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image, "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]}}}})
}

/// Live (not terminating) and ready pods of one Deployment, from a stream of pod events.
#[derive(Default)]
struct Census {
    live: std::collections::HashMap<String, bool>,
    worst_total: usize,
}

impl Census {
    fn apply(&mut self, ev: &bosun_client::Event) {
        let o = &ev.object;
        let uid = o["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if ev.kind == "DELETED" || o["metadata"].get("deletionTimestamp").is_some() {
            self.live.remove(&uid);
        } else if ev.kind != "BOOKMARK" {
            let ready = o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            self.live.insert(uid, ready);
        }
        self.worst_total = self.worst_total.max(self.live.len());
    }
    fn ready(&self) -> usize {
        self.live.values().filter(|r| **r).count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_stays_within_surge_and_unavailability_through_a_leader_kill() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 5);
    client
        .apply("default", &deployment("roll", 10, "img:v1"))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "10 ready replicas", || async {
        let d = client.get("deployments", "default", "roll").await.ok()?;
        (d["status"]["availableReplicas"] == 10 && d["status"]["updatedReplicas"] == 10)
            .then_some(())
    })
    .await
    .unwrap();
    let leader = c.leader(&ALL).await.unwrap();
    let follower = *ALL.iter().find(|n| **n != leader.as_str()).unwrap();
    let watcher = client_of(&c, &[follower], &c.admin_tls());
    let mut q = query("pods", "default");
    q.labels = "app=roll".into();
    let mut stream = Box::pin(watcher.watch(&q, "", true).await.unwrap());
    // The initial state: every pod, then a bookmark.
    let mut census = Census::default();
    loop {
        let ev = stream.next().await.unwrap().unwrap();
        if ev.kind == "BOOKMARK" {
            break;
        }
        census.apply(&ev);
    }
    assert_eq!((census.live.len(), census.ready()), (10, 10));
    census.worst_total = 0;
    let mut worst_ready = usize::MAX;
    client
        .apply("default", &deployment("roll", 10, "img:v2"))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        let mut killed = false;
        while let Some(Ok(ev)) = stream.next().await {
            census.apply(&ev);
            worst_ready = worst_ready.min(census.ready());
            // Kill the leader in the middle of the rollout: as soon as a new pod shows.
            if !killed && ev.object["spec"]["containers"][0]["image"] == "img:v2" {
                c.ctl(&["kill", &leader]).unwrap();
                killed = true;
            }
            let d = client.get("deployments", "default", "roll").await.ok();
            if let Some(d) = d {
                let s = &d["status"];
                if s["updatedReplicas"] == 10
                    && s["availableReplicas"] == 10
                    && s["replicas"] == 10
                    && d["metadata"]["generation"] == s["observedGeneration"]
                    && census.live.len() == 10
                {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "the rollout did not complete");
    assert!(
        census.worst_total <= 12,
        "{} pods at once: more than replicas + maxSurge (12)",
        census.worst_total
    );
    assert!(
        worst_ready >= 9,
        "{worst_ready} ready pods at some point: fewer than replicas - maxUnavailable (9)"
    );
    // Every pod runs the new image.
    let pods = client.list_all(&q).await.unwrap().items;
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .collect();
    assert_eq!(live.len(), 10);
    assert!(live
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "img:v2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_misses_its_deadline_is_rolled_back_when_asked() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 3);
    let mut d = deployment("safe", 3, "img:good");
    d["metadata"]["annotations"] = json!({"bosun.io/auto-rollback": "true"});
    d["spec"]["progressDeadlineSeconds"] = json!(3);
    client.apply("default", &d).await.unwrap();
    eventually(Duration::from_secs(30), "3 available", || async {
        let d = client.get("deployments", "default", "safe").await.ok()?;
        (d["status"]["availableReplicas"] == 3).then_some(())
    })
    .await
    .unwrap();
    // The revision that ran all its replicas is marked stable: the rollback target.
    eventually(
        Duration::from_secs(30),
        "the good revision marked stable",
        || async {
            let sets = client
                .list_all(&query("replicasets", "default"))
                .await
                .ok()?;
            sets.items
                .iter()
                .any(|r| r["metadata"]["annotations"]["bosun.io/stable"] == "true")
                .then_some(())
        },
    )
    .await
    .unwrap();
    // The new revision can never be scheduled: no node has this label.
    let mut bad = d.clone();
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:bad");
    bad["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "nowhere"});
    client.apply("default", &bad).await.unwrap();
    let back = eventually(
        Duration::from_secs(40),
        "rolled back to the good image",
        || async {
            let d = client.get("deployments", "default", "safe").await.ok()?;
            let img = d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()?
                .to_string();
            let s = &d["status"];
            (img == "img:good"
                && s["updatedReplicas"] == 3
                && s["availableReplicas"] == 3
                && s["replicas"] == 3)
                .then_some(d)
        },
    )
    .await;
    let back = match back {
        Ok(d) => d,
        Err(e) => {
            let d = client.get("deployments", "default", "safe").await;
            let sets = client.list_all(&query("replicasets", "default")).await;
            let summary: Vec<String> = sets
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    format!(
                        "{} rev={} spec={} status={}",
                        r["metadata"]["name"],
                        r["metadata"]["annotations"],
                        r["spec"]["replicas"],
                        r["status"]
                    )
                })
                .collect();
            panic!("{e}\ndeployment: {d:?}\nreplicasets: {summary:#?}");
        }
    };
    assert!(back["spec"]["template"]["spec"]
        .get("nodeSelector")
        .is_none());
    // Only the revision whose rollout completed is marked stable (the rollback target).
    let sets = client
        .list_all(&query("replicasets", "default"))
        .await
        .unwrap()
        .items;
    let stable: Vec<&str> = sets
        .iter()
        .filter(|r| r["metadata"]["annotations"]["bosun.io/stable"] == "true")
        .map(|r| {
            r["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(stable, ["img:good"], "replicasets: {sets:#?}");
    // At no point did the failed rollout take the service below maxUnavailable: the good
    // pods kept running.
    let mut q = query("pods", "default");
    q.labels = "app=safe".into();
    let pods = client.list_all(&q).await.unwrap().items;
    let good = pods
        .iter()
        .filter(|p| {
            p["spec"]["containers"][0]["image"] == "img:good"
                && p["metadata"].get("deletionTimestamp").is_none()
        })
        .count();
    assert_eq!(good, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_scales_rolls_out_undoes_and_drains() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 3);
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    client
        .apply("default", &deployment("cli", 2, "img:v1"))
        .await
        .unwrap();
    let out = run(&["rollout", "status", "deployment/cli", "--timeout", "60"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    run(&["scale", "deployment", "cli", "--replicas", "4"]);
    run(&["set", "image", "deployment/cli", "c=img:v2"]);
    let out = run(&["rollout", "status", "deployment/cli", "--timeout", "60"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = run(&["rollout", "history", "deployment/cli"]);
    assert!(out.contains("img:v1") && out.contains("img:v2"), "{out}");
    run(&["rollout", "undo", "deployment/cli"]);
    run(&["rollout", "status", "deployment/cli", "--timeout", "60"]);
    let d = client.get("deployments", "default", "cli").await.unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "img:v1"
    );
    assert_eq!(d["status"]["availableReplicas"], 4);

    // Drain a node that runs some of the pods: they move, and it stays cordoned.
    let mut q = query("pods", "default");
    q.labels = "app=cli".into();
    let pods = client.list_all(&q).await.unwrap().items;
    let node = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    let out = run(&["drain", &node]);
    assert!(out.contains("drained"), "{out}");
    let moved = eventually(
        Duration::from_secs(30),
        "4 running pods elsewhere",
        || async {
            let pods = client.list_all(&q).await.ok()?.items;
            let running: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    p["metadata"].get("deletionTimestamp").is_none()
                        && p["status"]["phase"] == "Running"
                })
                .collect();
            (running.len() == 4
                && running
                    .iter()
                    .all(|p| p["spec"]["nodeName"] != node.as_str()))
            .then_some(())
        },
    )
    .await;
    assert!(moved.is_ok(), "pods still on the drained node");
    let n = client.get("nodes", "", &node).await.unwrap();
    assert_eq!(n["spec"]["unschedulable"], true);
    run(&["uncordon", &node]);
    let n = client.get("nodes", "", &node).await.unwrap();
    assert!(n["spec"].get("unschedulable").is_none(), "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_heartbeats_stop_has_its_pods_replaced_elsewhere() {
    let c = match Cluster::up(bin(), 3, &["--node-grace", "1500:2000"]) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let client = admin(&c);
    ready(&client).await;
    let doomed = hollow_named(&c, "a", 2);
    let _survivor = hollow_named(&c, "b", 2);
    wait_nodes(&client, 4).await;
    client
        .create("replicasets", "default", &replicaset("ha", 4))
        .await
        .unwrap();
    let pods = wait_running(&client, "ha", 4).await;
    let on_a = pods
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or("")
                .starts_with("a-")
        })
        .count();
    assert!(on_a > 0, "no pod landed on the nodes about to die");
    drop(doomed);
    // The dead nodes are marked and tainted, their pods evicted and replaced on b-*.
    let moved = eventually(
        Duration::from_secs(30),
        "pods replaced on live nodes",
        || async {
            let pods = client.list_all(&query("pods", "default")).await.ok()?.items;
            let running = active_running(&pods, "ha");
            let live: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
                .collect();
            (running.len() == 4
                && live.len() == 4
                && running.iter().all(|p| {
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("b-")
                }))
            .then_some(running)
        },
    )
    .await
    .unwrap();
    assert_eq!(moved.len(), 4);
    let node = client.get("nodes", "", "a-0").await.unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown", "{ready}");
    let taints = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"),
        "{taints:?}"
    );
    // A live node keeps Ready=True and no taint.
    let b = client.get("nodes", "", "b-0").await.unwrap();
    assert!(b["spec"].get("taints").is_none(), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_lists_the_ready_pods_it_selects() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 3);
    wait_nodes(&client, 3).await;
    let mut rs = replicaset("ep", 3);
    rs["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "http", "containerPort": 8080}]);
    client.create("replicasets", "default", &rs).await.unwrap();
    client
        .create("services", "default", &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ep", "namespace": "default"},
            "spec": {"selector": {"rs": "ep"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}))
        .await
        .unwrap();
    let ips = |want: usize| {
        let client = client.clone();
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("{want} endpoint addresses"),
                || async {
                    let pods = client.list_all(&query("pods", "default")).await.ok()?.items;
                    let mut pod_ips: Vec<String> = active_running(&pods, "ep")
                        .iter()
                        .map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string())
                        .collect();
                    pod_ips.sort();
                    let ep = client.get("endpoints", "default", "ep").await.ok()?;
                    let mut got: Vec<String> = ep["subsets"][0]["addresses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|a| a["ip"].as_str().unwrap_or("").to_string())
                        .collect();
                    got.sort();
                    (got.len() == want
                        && got == pod_ips
                        && ep["subsets"][0]["ports"]
                            == json!([{"name": "web", "port": 8080, "protocol": "TCP"}]))
                    .then_some(got)
                },
            )
            .await
            .unwrap()
        }
    };
    ips(3).await;
    client
        .patch(
            "replicasets",
            "default",
            "ep",
            "",
            &json!({"spec": {"replicas": 1}}),
        )
        .await
        .unwrap();
    ips(1).await;
    client
        .delete("services", "default", "ep", None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "endpoints removed with the service",
        || async {
            (client.get("endpoints", "default", "ep").await.err()?.code() == Some(Code::NotFound))
                .then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn anti_affinity_keeps_replicas_on_separate_nodes_and_says_why_one_waits() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 2);
    wait_nodes(&client, 2).await;
    let mut rs = replicaset("apart", 3);
    rs["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"rs": "apart"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    client.create("replicasets", "default", &rs).await.unwrap();
    let msg = eventually(
        Duration::from_secs(30),
        "two placed, one waiting with a reason",
        || async {
            let pods = client.list_all(&query("pods", "default")).await.ok()?.items;
            let running = active_running(&pods, "apart");
            let mut q = query("events", "default");
            q.fields = "reason=FailedScheduling".into();
            let ev = client.list(&q).await.ok()?.items;
            let msg = ev
                .iter()
                .find_map(|e| e["message"].as_str().map(str::to_string))?;
            (running.len() == 2).then_some((running, msg))
        },
    )
    .await
    .unwrap();
    let nodes: HashSet<&str> = msg
        .0
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "two replicas on one node: {nodes:?}");
    assert_eq!(
        msg.1,
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
}

fn job(name: &str, completions: i64, parallelism: i64, exit: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": 2,
            "template": {"metadata": {"annotations": {"bosun.io/hollow-exit-code": exit}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "bosun/busybox:latest"}]}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_to_completion_or_stop_at_their_backoff_limit() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 2);
    wait_nodes(&client, 2).await;
    client
        .create("jobs", "default", &job("ok", 4, 2, "0"))
        .await
        .unwrap();
    client
        .create("jobs", "default", &job("bad", 3, 1, "1"))
        .await
        .unwrap();
    let condition = |j: &Value, kind: &str| {
        j["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
    };
    let ok = eventually(Duration::from_secs(40), "job ok complete", || async {
        let j = client.get("jobs", "default", "ok").await.ok()?;
        condition(&j, "Complete").then_some(j)
    })
    .await
    .unwrap();
    assert_eq!(ok["status"]["succeeded"], 4);
    assert_eq!(ok["status"]["active"], 0);
    assert!(ok["status"]["completionTime"].is_string());
    let bad = eventually(Duration::from_secs(40), "job bad failed", || async {
        let j = client.get("jobs", "default", "bad").await.ok()?;
        condition(&j, "Failed").then_some(j)
    })
    .await
    .unwrap();
    assert_eq!(
        bad["status"]["failed"], 3,
        "backoffLimit 2: the third failure stops it"
    );
    assert!(bad["status"]["conditions"]
        .to_string()
        .contains("BackoffLimitExceeded"));
    assert!(!condition(&bad, "Complete"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemonset_runs_one_pod_per_node_and_follows_new_nodes_and_templates() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _first = hollow_named(&c, "a", 2);
    wait_nodes(&client, 2).await;
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "img:v1"}]}}}});
    client.apply("default", &ds).await.unwrap();
    let placed = |n: usize, image: &'static str| {
        let client = client.clone();
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("{n} daemon pods running {image}"),
                || async {
                    let mut q = query("pods", "default");
                    q.labels = "app=agent".into();
                    let pods = client.list_all(&q).await.ok()?.items;
                    let live: Vec<&Value> = pods
                        .iter()
                        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
                        .collect();
                    let nodes: HashSet<&str> = live
                        .iter()
                        .filter_map(|p| p["spec"]["nodeName"].as_str())
                        .collect();
                    let ok = live.len() == n
                        && nodes.len() == n
                        && live.iter().all(|p| {
                            p["status"]["phase"] == "Running"
                                && p["spec"]["containers"][0]["image"] == image
                        });
                    ok.then_some(())
                },
            )
            .await
            .unwrap()
        }
    };
    placed(2, "img:v1").await;
    // A new node gets its pod, even cordoned.
    let _second = hollow_named(&c, "b", 1);
    wait_nodes(&client, 3).await;
    client
        .patch(
            "nodes",
            "",
            "b-0",
            "",
            &json!({"spec": {"unschedulable": true}}),
        )
        .await
        .unwrap();
    placed(3, "img:v1").await;
    // A new template rolls over every node.
    let mut v2 = ds.clone();
    v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:v2");
    client.apply("default", &v2).await.unwrap();
    placed(3, "img:v2").await;
    let d = eventually(Duration::from_secs(20), "status", || async {
        let d = client.get("daemonsets", "default", "agent").await.ok()?;
        (d["status"]["numberReady"] == 3 && d["status"]["updatedNumberScheduled"] == 3).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(d["status"]["desiredNumberScheduled"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_garbage_collector_removes_pods_whose_owner_vanished() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 2);
    wait_nodes(&client, 2).await;
    client
        .create("replicasets", "default", &replicaset("gone", 2))
        .await
        .unwrap();
    wait_running(&client, "gone", 2).await;
    // The owner disappears behind the API server's back (raw store delete: no propagation).
    let mut kv = c.kv("s1").unwrap();
    kv.delete_range(bosun_api::etcd::DeleteRangeRequest {
        key: b"/registry/replicasets/default/gone".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "orphaned pods collected",
        || async {
            let mut q = query("pods", "default");
            q.labels = "rs=gone".into();
            client.list(&q).await.ok()?.items.is_empty().then_some(())
        },
    )
    .await
    .unwrap();
    // A pod whose owner lives is kept: once a stray pod (owned by a ReplicaSet that never
    // existed) created after it has been collected, a full pass has looked at it.
    client
        .create("replicasets", "default", &replicaset("kept", 1))
        .await
        .unwrap();
    let kept = wait_running(&client, "kept", 1).await;
    let stray = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "namespace": "default",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ghost",
            "uid": "00000000-0000-4000-8000-000000000000", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "bosun/busybox:latest"}]}});
    client.create("pods", "default", &stray).await.unwrap();
    eventually(Duration::from_secs(30), "stray pod collected", || async {
        (client.get("pods", "default", "stray").await.err()?.code() == Some(Code::NotFound))
            .then_some(())
    })
    .await
    .unwrap();
    let still = wait_running(&client, "kept", 1).await;
    assert_eq!(
        still[0]["metadata"]["uid"], kept[0]["metadata"]["uid"],
        "the owned pod was collected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_replaces_all_pods_at_once_and_a_paused_deployment_waits() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let _agent = hollow(&c, 3);
    wait_nodes(&client, 3).await;
    let mut d = deployment("rec", 3, "img:v1");
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    client.apply("default", &d).await.unwrap();
    let available = |image: &'static str| {
        let client = client.clone();
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("3 pods of {image}"),
                || async {
                    let mut q = query("pods", "default");
                    q.labels = "app=rec".into();
                    let pods = client.list_all(&q).await.ok()?.items;
                    let live: Vec<&Value> = pods
                        .iter()
                        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
                        .collect();
                    let ok = live.len() == 3
                        && live.iter().all(|p| {
                            p["status"]["phase"] == "Running"
                                && p["spec"]["containers"][0]["image"] == image
                        });
                    ok.then_some(())
                },
            )
            .await
            .unwrap()
        }
    };
    available("img:v1").await;
    // Recreate: never an old and a new pod at the same time.
    let mut q = query("pods", "default");
    q.labels = "app=rec".into();
    let mut stream = Box::pin(client.watch(&q, "", true).await.unwrap());
    let mut live: std::collections::HashMap<String, String> = Default::default();
    loop {
        let ev = stream.next().await.unwrap().unwrap();
        if ev.kind == "BOOKMARK" {
            break;
        }
        live.insert(
            ev.object["metadata"]["uid"].as_str().unwrap_or("").into(),
            "img:v1".into(),
        );
    }
    let mut v2 = d.clone();
    v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:v2");
    client.apply("default", &v2).await.unwrap();
    let mixed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(ev)) = stream.next().await {
            let o = &ev.object;
            let uid = o["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if ev.kind == "DELETED" || o["metadata"].get("deletionTimestamp").is_some() {
                live.remove(&uid);
            } else if ev.kind != "BOOKMARK" {
                live.insert(
                    uid,
                    o["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                );
            }
            let images: HashSet<&String> = live.values().collect();
            if images.len() > 1 {
                return Some(images.into_iter().cloned().collect::<Vec<_>>());
            }
            if live.len() == 3 && live.values().all(|i| i == "img:v2") {
                return None;
            }
        }
        None
    })
    .await
    .expect("the Recreate rollout did not finish");
    assert!(mixed.is_none(), "old and new pods ran together: {mixed:?}");
    available("img:v2").await;

    // Paused: a new template is recorded but not rolled out until resumed.
    client
        .patch(
            "deployments",
            "default",
            "rec",
            "",
            &json!({"spec": {"paused": true}}),
        )
        .await
        .unwrap();
    let mut v3 = v2.clone();
    v3["spec"]["paused"] = json!(true);
    v3["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:v3");
    client.apply("default", &v3).await.unwrap();
    let paused = eventually(Duration::from_secs(20), "paused condition", || async {
        let d = client.get("deployments", "default", "rec").await.ok()?;
        let cond = d["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")?
            .clone();
        (cond["reason"] == "DeploymentPaused"
            && d["status"]["observedGeneration"] == d["metadata"]["generation"])
            .then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(
        paused["status"]["updatedReplicas"], 0,
        "{}",
        paused["status"]
    );
    available("img:v2").await;
    let mut resumed = v3.clone();
    resumed["spec"]["paused"] = json!(false);
    client.apply("default", &resumed).await.unwrap();
    available("img:v3").await;
}
