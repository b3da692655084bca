//! Agent tests against the host's real Docker Engine: real `bosun` servers on loopback,
//! real `bosun agent` processes, pods as Docker containers of the local busybox image.
//! Without Docker they are skipped, except under CI=true, where that fails.

mod util;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

fn pod(name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_runs_with_its_config_files_and_limits_and_its_output_is_readable() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    client
        .create("configmaps", "default", &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default"}, "data": {"mode": "fast", "app.conf": "listen 80"}}))
        .await
        .unwrap();
    client
        .create("secrets", "default", &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default"}, "stringData": {"password": "s3cret"}}))
        .await
        .unwrap();
    let script = "echo MODE=$MODE PW=$PW POD=$POD_NAME NS=$NS IP=$POD_IP; cat /work/init.txt; \
        cat /etc/cfg/app.conf; echo; cat /etc/creds/password; echo; hostname; \
        mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www";
    client
        .create("pods", "default", &pod("web", "worker-1", json!({
            "initContainers": [{"name": "init", "image": "bosun/busybox:latest",
                "command": ["sh", "-c", "echo from-init > /work/init.txt"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "web", "image": "bosun/busybox:latest", "command": ["sh", "-c", script],
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "startupProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
                "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 2},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/etc/cfg"},
                    {"name": "creds", "mountPath": "/etc/creds"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "creds", "secret": {"secretName": "creds"}}]})))
        .await
        .unwrap();
    let p = pod_until(
        &client,
        "default",
        "web",
        60,
        "web running and ready",
        |p| p["status"]["phase"] == "Running" && ready(p),
    )
    .await;
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        status(&p, "web")["started"],
        true,
        "the startup probe passed"
    );
    assert!(!ip.is_empty());
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    // Limits on its container, none on its init container: Burstable, as Kubernetes
    // counts init containers too.
    assert_eq!(p["status"]["qosClass"], "Burstable");
    let id = container_id(&p, "web");
    // Through the API server and the agent, as a user would read it.
    let out = cli(&c, &["logs", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        logs,
        docker_cmd(&["logs", &id]),
        "bosun logs shows what the container wrote"
    );
    assert!(
        logs.contains(&format!("MODE=fast PW=s3cret POD=web NS=default IP={ip}")),
        "{logs}"
    );
    for line in ["from-init", "listen 80", "s3cret", "web"] {
        assert!(
            logs.lines().any(|l| l == line),
            "{line:?} missing in {logs}"
        );
    }
    let limits = docker_cmd(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}}",
        &id,
    ]);
    let fields: Vec<&str> = limits.split_whitespace().collect();
    assert_eq!(fields[0], (64 * 1024 * 1024).to_string());
    assert_eq!(fields[1], "500000000");
    assert!(fields[2].starts_with("container:"), "{limits}");
    // Secret files are read-only inside the container.
    let out = std::process::Command::new("docker")
        .args(["exec", &id, "sh", "-c", "echo x > /etc/creds/password"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a secret volume must be read-only");
    // The tcpSocket liveness probe held all along: no restart.
    let p = client.get("pods", "default", "web").await.unwrap();
    assert_eq!(restarts(&p, "web"), 0, "{}", status(&p, "web"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_container_backs_off_and_reports_crash_loop_back_off() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    let created = Instant::now();
    client
        .create(
            "pods",
            "default",
            &pod(
                "crash",
                "worker-1",
                json!({"containers": [{"name": "c",
            "image": "bosun/busybox:latest", "command": ["sh", "-c", "echo boom; exit 3"]}]}),
            ),
        )
        .await
        .unwrap();
    let p = pod_until(
        &client,
        "default",
        "crash",
        60,
        "CrashLoopBackOff after 4 restarts",
        |p| {
            restarts(p, "c") >= 4
                && status(p, "c")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        },
    )
    .await;
    // Back-off 0, 0.5, 1, 2 s: four restarts take at least 3.5 s (without it, a fraction).
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "{:?}",
        created.elapsed()
    );
    let s = status(&p, "c");
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(s["lastState"]["terminated"]["reason"], "Error", "{s}");
    assert_eq!(p["status"]["phase"], "Running");
    assert!(!ready(&p));
    // One dead instance is kept (for logs --previous), not every attempt.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let kept = containers(&format!("bosun.io/pod-uid={uid}"));
    assert!(
        kept.len() <= 3,
        "sandbox, latest and previous at most: {kept:?}"
    );
    let out = cli(&c, &["logs", "crash", "--previous"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "boom\n");

    // restartPolicy Never: the pod fails and stays failed.
    client
        .create("pods", "default", &pod("once", "worker-1", json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "bosun/busybox:latest", "command": ["sh", "-c", "exit 7"]}]})))
        .await
        .unwrap();
    let p = pod_until(&client, "default", "once", 60, "once Failed", |p| {
        p["status"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(status(&p, "c")["state"]["terminated"]["exitCode"], 7);
    assert_eq!(restarts(&p, "c"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_liveness_probe_restarts_the_container_and_readiness_toggles_ready() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    client
        .create("pods", "default", &pod("sick", "worker-1", json!({"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 1000"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}}]})))
        .await
        .unwrap();
    let p = pod_until(
        &client,
        "default",
        "sick",
        60,
        "sick restarted by its liveness probe",
        |p| restarts(p, "c") >= 1 && running(p, "c"),
    )
    .await;
    assert!(
        !status(&p, "c")["lastState"]["terminated"].is_null(),
        "{}",
        status(&p, "c")
    );
    let events = client
        .list(&bosun_client::Query {
            resource: "events".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e["reason"] == "Unhealthy" && e["involvedObject"]["name"] == "sick"),
        "an Unhealthy event names the pod"
    );

    client
        .create("pods", "default", &pod("flaky", "worker-1", json!({"containers": [{"name": "c",
            "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "while :; do touch /tmp/ready; sleep 3; rm -f /tmp/ready; sleep 3; done"],
            "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}}]})))
        .await
        .unwrap();
    // A slow starter: its startup probe fails a few times, within its threshold, and the
    // container is left to start (not restarted at the first failure).
    client
        .create("pods", "default", &pod("slow", "worker-1", json!({"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "sleep 3; touch /tmp/up; exec sleep 1000"],
            "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 10}}]})))
        .await
        .unwrap();
    let p = pod_until(&client, "default", "slow", 60, "slow started", |p| {
        status(p, "c")["started"] == true
    })
    .await;
    assert_eq!(
        restarts(&p, "c"),
        0,
        "restarted within its startup threshold"
    );
    assert!(ready(&p));
    pod_until(&client, "default", "flaky", 60, "flaky Ready", ready).await;
    pod_until(&client, "default", "flaky", 30, "flaky not Ready", |p| {
        !ready(p) && running(p, "c")
    })
    .await;
    let p = pod_until(&client, "default", "flaky", 30, "flaky Ready again", ready).await;
    assert_eq!(restarts(&p, "c"), 0, "readiness never restarts");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_sends_sigterm_waits_out_the_grace_period_then_kills() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    // Exits 2 s after SIGTERM, within its 10 s grace.
    client
        .create(
            "pods",
            "default",
            &pod(
                "polite",
                "worker-1",
                json!({"terminationGracePeriodSeconds": 10,
            "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "trap 'sleep 2; exit 0' TERM; while :; do sleep 1; done"]}]}),
            ),
        )
        .await
        .unwrap();
    // Ignores SIGTERM: killed when its 2 s grace is over.
    client
        .create(
            "pods",
            "default",
            &pod(
                "stubborn",
                "worker-1",
                json!({"terminationGracePeriodSeconds": 2,
            "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]}]}),
            ),
        )
        .await
        .unwrap();
    let mut uids = Vec::new();
    for n in ["polite", "stubborn"] {
        let p = pod_until(&client, "default", n, 60, &format!("{n} running"), |p| {
            running(p, "c")
        })
        .await;
        uids.push(p["metadata"]["uid"].as_str().unwrap().to_string());
    }
    for (name, min, max) in [("polite", 1.5, 9.0), ("stubborn", 1.5, 9.0)] {
        let t = Instant::now();
        client.delete("pods", "default", name, None).await.unwrap();
        // Marked, not removed, while the container runs.
        let p = client.get("pods", "default", name).await.unwrap();
        assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
        eventually(
            Duration::from_secs(30),
            &format!("{name} removed"),
            || async {
                client
                    .get("pods", "default", name)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await
        .unwrap();
        let took = t.elapsed().as_secs_f64();
        assert!(took >= min && took <= max, "{name} took {took:.1} s");
    }
    for uid in uids {
        assert!(
            containers(&format!("bosun.io/pod-uid={uid}")).is_empty(),
            "containers of {uid} left"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_agents_adopt_their_containers_and_two_agents_on_one_host_stay_apart() {
    if !docker() {
        return;
    }
    let c = up(2);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1", "worker-2"]).await;
    let spec = || {
        json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "bosun/busybox:latest",
        "command": ["sh", "-c", "exec sleep 1000"]}]})
    };
    for (name, node) in [("a1", "worker-1"), ("a2", "worker-1"), ("b1", "worker-2")] {
        client
            .create("pods", "default", &pod(name, node, spec()))
            .await
            .unwrap();
    }
    let mut before = std::collections::BTreeMap::new();
    for name in ["a1", "a2", "b1"] {
        let p = pod_until(
            &client,
            "default",
            name,
            60,
            &format!("{name} running"),
            |p| running(p, "c"),
        )
        .await;
        let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
        before.insert(
            name,
            (uid.clone(), containers(&format!("bosun.io/pod-uid={uid}"))),
        );
    }
    let node_of = |uid: &str| {
        docker_cmd(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=bosun.io/pod-uid={uid}"),
            "--format",
            "{{.Label \"bosun.io/node\"}}",
        ])
    };
    assert!(node_of(&before["b1"].0).lines().all(|l| l == "worker-2"));
    assert!(node_of(&before["a1"].0).lines().all(|l| l == "worker-1"));

    // worker-1 dies; a2 is force-deleted meanwhile; worker-2 stops too, and b1 goes the same way.
    c.ctl(&["kill", "worker-1"]).unwrap();
    c.ctl(&["stop", "worker-2"]).unwrap();
    client
        .delete("pods", "default", "a2", Some(0))
        .await
        .unwrap();
    client
        .delete("pods", "default", "b1", Some(0))
        .await
        .unwrap();
    c.ctl(&["start", "worker-1"]).unwrap();
    let log = c.dir.path().join("worker-1.log");
    eventually(
        Duration::from_secs(30),
        "worker-1's startup sweep",
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            (text.matches("startup sweep done").count() >= 2).then_some(())
        },
    )
    .await
    .unwrap();
    // a1 adopted: same containers, no restart.
    let (uid1, ids1) = &before["a1"];
    assert_eq!(
        &containers(&format!("bosun.io/pod-uid={uid1}")),
        ids1,
        "a1 started twice"
    );
    let p = client.get("pods", "default", "a1").await.unwrap();
    assert_eq!(restarts(&p, "c"), 0);
    // a2's containers were worker-1's orphans: removed.
    let (uid2, _) = &before["a2"];
    eventually(
        Duration::from_secs(30),
        "a2's containers removed",
        || async {
            containers(&format!("bosun.io/pod-uid={uid2}"))
                .is_empty()
                .then_some(())
        },
    )
    .await
    .unwrap();
    // b1's belong to worker-2: untouched by worker-1, removed by worker-2 when it is back.
    let (uidb, idsb) = &before["b1"];
    assert_eq!(
        &containers(&format!("bosun.io/pod-uid={uidb}")),
        idsb,
        "worker-1 touched worker-2's containers"
    );
    c.ctl(&["start", "worker-2"]).unwrap();
    eventually(
        Duration::from_secs(30),
        "b1's containers removed by worker-2",
        || async {
            containers(&format!("bosun.io/pod-uid={uidb}"))
                .is_empty()
                .then_some(())
        },
    )
    .await
    .unwrap();
    // The adopted pod still runs and is still reported.
    let p = pod_until(
        &client,
        "default",
        "a1",
        30,
        "a1 running after adoption",
        |p| running(p, "c"),
    )
    .await;
    assert_eq!(container_id(&p, "c"), {
        let ids = docker_cmd(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=bosun.io/pod-uid={uid1}"),
            "--filter",
            "label=bosun.io/container=c",
        ]);
        ids.trim().to_string()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_exec_reach_the_agent_through_the_api_server_under_rbac() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    client
        .create("pods", "default", &pod("talk", "worker-1", json!({"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sh", "-c", "i=0; while :; do echo line-$i; i=$((i+1)); sleep 0.2; done"]}]})))
        .await
        .unwrap();
    pod_until(&client, "default", "talk", 60, "talk running", |p| {
        running(p, "c")
    })
    .await;

    // exec: output, stderr, exit code, stdin.
    let out = cli(
        &c,
        &[
            "exec",
            "talk",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "the command's exit code is passed on"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let admin_cfg = c.dir.path().join("client.toml");
    let out = cli_as(
        &c,
        &admin_cfg,
        &["exec", "-i", "talk", "--", "sh", "-c", "tr a-z A-Z"],
        Some("piped in\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED IN\n");
    // -it: a terminal in the container (script(1) gives the CLI one here).
    let line = format!("{} exec -it talk -- sh", bin().display());
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BOSUN_CONFIG", &admin_cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut i) = child.stdin.take() {
                i.write_all(b"tty; exit 3\n")?;
            }
            child.wait_with_output()
        })
        .expect("script(1) from util-linux runs the CLI on a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "no terminal inside: {text}");
    assert_eq!(out.status.code(), Some(3), "{text}");

    // logs -f follows new output; --tail limits the start.
    let mut follow = std::process::Command::new(bin())
        .args(["logs", "-f", "--tail", "1", "talk"])
        .env("BOSUN_CONFIG", &admin_cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(5)
            .collect::<Result<Vec<_>, _>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let n: Vec<u64> = lines
        .iter()
        .map(|l| l.trim_start_matches("line-").parse().unwrap())
        .collect();
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines while following: {lines:?}"
    );

    // RBAC: view may read logs, not exec; edit may exec; no binding may do neither.
    for (user, role) in [("viewer", "view"), ("editor", "edit")] {
        client
            .create("rolebindings", "default", &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": user, "namespace": "default"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}))
            .await
            .unwrap();
    }
    let viewer = user_config(&c, "viewer", "dev");
    let editor = user_config(&c, "editor", "dev");
    let nobody = user_config(&c, "nobody", "dev");
    // RBAC decisions follow the bindings once every server has them.
    eventually(
        Duration::from_secs(10),
        "the viewer may read logs",
        || async {
            cli_as(&c, &viewer, &["logs", "--tail", "1", "talk"], None)
                .status
                .success()
                .then_some(())
        },
    )
    .await
    .unwrap();
    let out = cli_as(&c, &viewer, &["exec", "talk", "--", "true"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("viewer") && err.contains("exec"), "{err}");
    eventually(Duration::from_secs(10), "the editor may exec", || async {
        cli_as(&c, &editor, &["exec", "talk", "--", "true"], None)
            .status
            .success()
            .then_some(())
    })
    .await
    .unwrap();
    let out = cli_as(&c, &nobody, &["logs", "talk"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: String = ["s1", "s2", "s3"]
        .iter()
        .map(|s| {
            std::fs::read_to_string(c.dir.path().join(format!("data/{s}/audit.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"subresource\":\"exec\"") && l.contains("\"user\":\"viewer\"")),
        "a refused exec is audited"
    );

    // top: the runtime's cpu and memory, through the API server; a cpu limit holds.
    client
        .create("pods", "default", &pod("burn", "worker-1", json!({"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "bosun/busybox:latest", "command": ["sh", "-c", "while :; do :; done"],
            "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}]})))
        .await
        .unwrap();
    pod_until(&client, "default", "burn", 60, "burn running", |p| {
        running(p, "c")
    })
    .await;
    let cpu = eventually(
        Duration::from_secs(30),
        "burn's cpu in bosun top",
        || async {
            let out = cli(&c, &["top", "pods"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find(|l| l.starts_with("burn "))?.to_string();
            let milli: i64 = line
                .split_whitespace()
                .nth(1)?
                .trim_end_matches('m')
                .parse()
                .ok()?;
            (milli > 50).then_some(milli)
        },
    )
    .await
    .unwrap();
    assert!(cpu <= 400, "a 250m limit let it use {cpu}m");
    let out = cli(&c, &["top", "nodes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("worker-1 ")), "{text}");
    let out = cli_as(&c, &nobody, &["top", "pods"], None);
    assert!(!out.status.success(), "top needs list pods");

    // Bad requests get clear errors.
    let out = cli(&c, &["logs", "talk", "-c", "nope"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"nope\" is not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&c, &["logs", "missing"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent's port refuses anything but a server certificate.
    let tls = bosun_pki::TlsMaterial {
        ca: c.dir.path().join("pki/ca.crt"),
        cert: c.dir.path().join("pki/users/admin.crt"),
        key: c.dir.path().join("pki/users/admin.key"),
    };
    let dialer = bosun_pki::Dialer::new(&tls).unwrap();
    let ch = dialer
        .channel(&format!("{}.21:10250", c.ip_base), "worker-1")
        .unwrap();
    let mut agent = bosun_api::resources::agent_client::AgentClient::new(ch);
    let r = agent
        .logs(bosun_api::resources::LogsRequest {
            namespace: "default".into(),
            name: "talk".into(),
            tail_lines: -1,
            ..Default::default()
        })
        .await;
    assert!(r.is_err(), "a user certificate reached the agent directly");
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_that_cannot_run_say_why_and_the_agent_fails_over_between_servers() {
    if !docker() {
        return;
    }
    let c = up(1);
    let client = admin(&c);
    nodes_ready(&c, &client, &["worker-1"]).await;
    let waiting = |p: &Value| {
        status(p, "c")["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    client
        .create(
            "pods",
            "default",
            &pod(
                "noimage",
                "worker-1",
                json!({"containers": [{"name": "c",
            "image": "bosun/nothing-here:1"}]}),
            ),
        )
        .await
        .unwrap();
    let p = pod_until(
        &client,
        "default",
        "noimage",
        60,
        "ErrImageNeverPull",
        |p| waiting(p) == "ErrImageNeverPull",
    )
    .await;
    assert!(status(&p, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .contains("bosun/nothing-here:1"));
    client
        .create("pods", "default", &pod("nosecret", "worker-1", json!({"containers": [{"name": "c",
            "image": "bosun/busybox:latest", "command": ["sleep", "100"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]})))
        .await
        .unwrap();
    let p = pod_until(
        &client,
        "default",
        "nosecret",
        60,
        "CreateContainerConfigError",
        |p| waiting(p) == "CreateContainerConfigError",
    )
    .await;
    assert_eq!(
        status(&p, "c")["state"]["waiting"]["message"],
        "secret \"absent\" not found"
    );
    client
        .create("pods", "default", &pod("hungry", "worker-1", json!({"restartPolicy": "Never", "containers": [{"name": "c",
            "image": "bosun/busybox:latest", "command": ["sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo $x | wc -c"],
            "resources": {"limits": {"memory": "32Mi"}}}]})))
        .await
        .unwrap();
    // Docker may record the OOM kill just after the exit: the status settles on it.
    let p = pod_until(
        &client,
        "default",
        "hungry",
        90,
        "hungry Failed, OOMKilled",
        |p| {
            p["status"]["phase"] == "Failed"
                && status(p, "c")["state"]["terminated"]["reason"] == "OOMKilled"
        },
    )
    .await;
    assert_eq!(status(&p, "c")["state"]["terminated"]["exitCode"], 137);
    // The secret appears: the pod starts without being recreated.
    client
        .create(
            "secrets",
            "default",
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "absent", "namespace": "default"}, "stringData": {"k": "v"}}),
        )
        .await
        .unwrap();
    pod_until(
        &client,
        "default",
        "nosecret",
        60,
        "nosecret running once its secret exists",
        |p| running(p, "c"),
    )
    .await;

    // The agent's client starts on s1: with s1 gone it carries on through the others.
    c.ctl(&["kill", "s1"]).unwrap();
    let rest: Vec<String> = ["s2", "s3"].iter().map(|s| c.endpoint(s)).collect();
    let others = bosun_client::Client::connect(&rest, &c.admin_tls()).unwrap();
    others
        .create("pods", "default", &pod("after", "worker-1", json!({"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "bosun/busybox:latest", "command": ["sleep", "100"]}]})))
        .await
        .unwrap();
    pod_until(
        &others,
        "default",
        "after",
        60,
        "a pod started after s1 died",
        |p| running(p, "c"),
    )
    .await;
    nodes_ready(&c, &others, &["worker-1"]).await;
}

/// Removes the containers with `label` when dropped, whatever the test did.
struct RemoveLabelled(String);

impl Drop for RemoveLabelled {
    fn drop(&mut self) {
        for id in containers(&self.0) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &id])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engines_oom_event_marks_the_container_it_killed_and_no_other() {
    use bosun_agent::docker::Docker;
    use bosun_agent::runtime::{ContainerRuntime, ContainerSpec, State};

    if !docker() {
        return;
    }
    let value = format!("oom-{}", std::process::id());
    let _cleanup = RemoveLabelled(format!("bosun.io/test={value}"));
    let rt = Docker::connect().await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let follower = {
        let (rt, v, c) = (rt.clone(), value.clone(), cancel.clone());
        tokio::spawn(async move { rt.follow_events("bosun.io/test", &v, c).await })
    };
    let spec = |name: &str, script: &str| ContainerSpec {
        name: format!("{value}-{name}"),
        image: "bosun/busybox:latest".into(),
        entrypoint: Some(vec!["sh".into(), "-c".into(), script.into()]),
        labels: [("bosun.io/test".to_string(), value.clone())].into(),
        memory: Some(32 << 20),
        ..Default::default()
    };
    let exited = |id: String| {
        let rt = rt.clone();
        async move {
            eventually(Duration::from_secs(60), "the container exited", || async {
                let c = rt.inspect(&id).await.ok()??;
                matches!(c.state, State::Exited { .. }).then_some(c.state)
            })
            .await
            .unwrap()
        }
    };

    // Killed by SIGKILL, not by the OOM killer: exit 137 too.
    let killed = rt.create(&spec("killed", "sleep 600")).await.unwrap();
    rt.start(&killed).await.unwrap();
    rt.stop(&killed, Duration::ZERO).await.unwrap();
    let s = exited(killed.clone()).await;
    assert!(
        matches!(
            s,
            State::Exited {
                code: 137,
                oom_killed: false,
                ..
            }
        ),
        "{s:?}"
    );

    // Over its 32 MiB limit.
    let hungry = rt
        .create(&spec(
            "hungry",
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo $x | wc -c",
        ))
        .await
        .unwrap();
    rt.start(&hungry).await.unwrap();
    exited(hungry.clone()).await;
    eventually(
        Duration::from_secs(30),
        "the engine's oom event",
        || async { rt.oom_seen(&hungry).then_some(()) },
    )
    .await
    .unwrap();
    let s = rt.inspect(&hungry).await.unwrap().unwrap().state;
    assert!(
        matches!(
            s,
            State::Exited {
                code: 137,
                oom_killed: true,
                ..
            }
        ),
        "{s:?}"
    );
    // Events come in order: the killed container's would have come first.
    assert!(!rt.oom_seen(&killed), "a plain SIGKILL is no OOM kill");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower stops when cancelled")
        .unwrap();
}
