//! The CLI as a user runs it: the example app applied, listed, described and deleted;
//! clear errors and exit codes.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn bosun(c: &Cluster, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
        .current_dir(bosun_testkit::repo_root())
        .output()
        .unwrap()
}

/// `bosun … | head`: the reader goes away while the CLI still writes; the CLI ends as a
/// shell tool does (141, "killed by SIGPIPE"), without a panic report.
#[test]
fn the_cli_ends_quietly_when_its_output_pipe_closes() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(bin())
        .args(["completion", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script (~90 KiB) is larger than a pipe's buffer (64 KiB): unread, the CLI is
    // still writing it when its reader goes away.
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(141), "stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_app_is_applied_listed_described_and_deleted() {
    let c = up();
    ready(&admin(&c)).await;
    let example = "config/examples/web.yaml";

    let out = bosun(&c, &["apply", "-f", example]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for line in [
        "namespace/web created",
        "configmap/web-content created",
        "secret/web-credentials created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let out = bosun(&c, &["apply", "-f", example]);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.matches(" unchanged").count(), 5, "{stdout}");

    let out = bosun(&c, &["get", "deploy", "-n", "web"]);
    let (stdout, _) = text(&out);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(lines.next().unwrap_or("").starts_with("web "), "{stdout}");

    let out = bosun(&c, &["get", "svc", "web", "-n", "web", "-o", "yaml"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("clusterIP: 10.96."), "{stdout}");
    assert!(stdout.contains("nodePort: 3"), "{stdout}");

    let out = bosun(&c, &["get", "deployments", "-A", "-o", "name"]);
    assert_eq!(text(&out).0.trim(), "deployment.apps/web");

    let out = bosun(&c, &["describe", "deployment", "web", "-n", "web"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Name:") && stdout.contains("Replicas:") && stdout.contains("3 desired"),
        "{stdout}"
    );

    // -l filters and -o json prints a List: the Deployment's three pods, not another pod.
    let client = admin(&c);
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "web", "labels": {"app": "other"}},
            "spec": {"containers": [{"name": "c", "image": "bosun/busybox:1.36"}]}})
    };
    for name in ["fast", "slow"] {
        client.create("pods", "web", &pod(name)).await.unwrap();
    }
    let list = eventually(
        Duration::from_secs(20),
        "the Deployment's 3 pods",
        || async {
            let out = bosun(
                &c,
                &["get", "pods", "-n", "web", "-l", "app=web", "-o", "json"],
            );
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            (list["items"].as_array()?.len() == 3).then_some(list)
        },
    )
    .await
    .unwrap();
    assert_eq!(list["kind"], "List");
    let web_pods = names(list["items"].as_array().unwrap());
    for p in list["items"].as_array().unwrap() {
        assert_eq!(p["metadata"]["labels"]["app"], "web", "{p}");
    }
    let out = bosun(
        &c,
        &["get", "pods", "-n", "web", "-l", "app=other", "-o", "name"],
    );
    assert_eq!(text(&out).0, "pod/fast\npod/slow\n");

    // -o wide adds kubectl's columns; nothing is scheduled (no node yet).
    let out = bosun(&c, &["get", "pods", "-n", "web", "-o", "wide"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let header = stdout.lines().next().unwrap_or("");
    let wide = [
        "STATUS",
        " IP ",
        " NODE ",
        " NOMINATED NODE ",
        " READINESS GATES",
    ];
    let at: Vec<Option<usize>> = wide.iter().map(|h| header.find(h)).collect();
    assert!(
        header.starts_with("NAME ") && at.iter().all(Option::is_some) && at.is_sorted(),
        "{stdout}"
    );
    let fast = stdout
        .lines()
        .find(|l| l.starts_with("fast "))
        .unwrap_or("");
    assert!(!fast.is_empty(), "no row for pod fast in:\n{stdout}");
    let cells: Vec<&str> = fast.split_whitespace().collect();
    assert_eq!(cells[1..3], ["0/1", "Pending"], "{stdout}");
    assert_eq!(cells[5..], ["<none>"; 4], "{stdout}");

    // describe shows the scheduler's event about the pod.
    let described = eventually(Duration::from_secs(20), "a FailedScheduling event", || {
        let out = bosun(&c, &["describe", "pod", &web_pods[0], "-n", "web"]);
        let stdout = text(&out).0;
        async move { stdout.contains("FailedScheduling").then_some(stdout) }
    })
    .await
    .unwrap();
    let events = described
        .split_once("\nEvents:\n")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no Events section in:\n{described}"));
    let row = events
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .unwrap_or("");
    assert!(
        row.trim_start().starts_with("Warning")
            && row.contains("default-scheduler")
            && row.contains("0/0 nodes are available: no nodes registered."),
        "{described}"
    );

    // get nodes lists a registered Node.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
    client.create("nodes", "", &node).await.unwrap();
    let out = bosun(&c, &["get", "nodes"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].starts_with("n1 "), "{stdout}");

    // A bound pod is deleted gracefully (it waits for its node's agent, and n1 has none)
    // unless --grace-period 0 says at once.
    for name in ["fast", "slow"] {
        client.bind("web", name, "n1").await.unwrap();
    }
    let out = bosun(&c, &["delete", "pod", "slow", "-n", "web", "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let slow = client.get("pods", "web", "slow").await.unwrap();
    assert!(slow["metadata"]["deletionTimestamp"].is_string(), "{slow}");
    let out = bosun(
        &c,
        &[
            "delete",
            "pod",
            "fast",
            "-n",
            "web",
            "--grace-period",
            "0",
            "--wait=false",
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0.trim(), "pod \"fast\" deleted");
    let gone = client.get("pods", "web", "fast").await.unwrap_err();
    assert_eq!(gone.code(), Some(tonic::Code::NotFound), "{gone}");
    let out = bosun(
        &c,
        &["delete", "pod", "slow", "-n", "web", "--grace-period", "0"],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let gone = client.get("pods", "web", "slow").await.unwrap_err();
    assert_eq!(gone.code(), Some(tonic::Code::NotFound), "{gone}");

    // Errors say what is wrong, with a failing exit code.
    let out = bosun(&c, &["get", "pods", "nope", "-n", "web"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("pods \"nope\" not found"),
        "{}",
        text(&out).1
    );
    let out = bosun(&c, &["get", "widgets"]);
    assert!(!out.status.success());
    assert!(text(&out)
        .1
        .contains("doesn't have a resource type \"widgets\""));

    // auth can-i answers with yes/no and the exit code.
    let out = bosun(&c, &["auth", "can-i", "create", "deployments", "-n", "web"]);
    assert!(out.status.success());
    assert_eq!(text(&out).0.trim(), "yes");
    let out = bosun(
        &c,
        &[
            "auth",
            "can-i",
            "create",
            "deployments",
            "-n",
            "web",
            "--as",
            "nobody",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out).0.trim(), "no");

    let out = bosun(&c, &["delete", "-f", example]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("namespace \"web\" deleted"), "{stdout}");
    let out = bosun(&c, &["get", "ns", "-o", "name"]);
    assert!(!text(&out).0.contains("namespace/web"), "{}", text(&out).0);

    let out = bosun(&c, &["completion", "bash"]);
    assert!(out.status.success());
    assert!(
        text(&out).0.contains("complete"),
        "no bash completion script"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_manifest_is_refused_naming_the_file_and_document() {
    let c = up();
    ready(&admin(&c)).await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\nkind: [unclosed\n",
    )
    .unwrap();
    let out = bosun(&c, &["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("bad.yaml: document 2"), "{stderr}");
    // Nothing from the file was applied: it is read whole before anything is sent.
    let out = bosun(&c, &["get", "cm", "ok"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_fails_over_and_streams_changes_with_watch() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    // s1 is first in the client config: stop it, and another server answers.
    c.ctl(&["stop", "s1"]).unwrap();
    let out = bosun(&c, &["get", "ns", "default", "-v"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("default"), "{stdout}");
    assert!(
        stderr.contains(&format!("answered by {}", c.endpoint("s2")))
            || stderr.contains(&format!("answered by {}", c.endpoint("s3"))),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("answered by {}", c.endpoint("s1"))),
        "{stderr}"
    );

    // get -w prints a row per change until interrupted.
    let mut child = Command::new(bin())
        .args(["get", "cm", "-n", "default", "-w"])
        .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut created = false;
    while std::time::Instant::now() < deadline && !seen.contains("watched-cm") {
        if !created {
            // Created after the watch is up: retried until the row shows.
            if client
                .create(
                    "configmaps",
                    "default",
                    &configmap("default", "watched-cm", serde_json::json!({"a": "1"})),
                )
                .await
                .is_ok()
            {
                created = true;
            }
        }
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("watched-cm"),
        "no row for the new configmap in:\n{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_come_from_directories_and_stdin() {
    let c = up();
    ready(&admin(&c)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-a\ndata:\n  k: v\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-b"}}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let out = bosun(&c, &["apply", "-f", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("configmap/from-a created") && stdout.contains("configmap/from-b created"),
        "{stdout}"
    );

    let mut child = Command::new(bin())
        .args(["apply", "-f", "-", "-n", "kube-public"])
        .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-stdin\n---\n# only a comment\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("configmap/from-stdin created"), "{stdout}");
    let out = bosun(
        &c,
        &["get", "cm", "from-stdin", "-n", "kube-public", "-o", "name"],
    );
    assert_eq!(text(&out).0.trim(), "configmap/from-stdin");
}
