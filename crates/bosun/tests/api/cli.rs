//! The CLI as a user runs it: the example app applied, listed, described and deleted;
//! clear errors and exit codes.

use std::process::{Command, Output};

use crate::util::*;

fn bosun(c: &Cluster, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
        .current_dir(bosun_testkit::repo_root())
        .output()
        .unwrap()
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
