//! Fixtures of the agent tests: a cluster with real Docker agents, pods, the Docker CLI.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bosun_client::Client;
pub use bosun_testkit::{eventually, repo_root, Cluster};
use serde_json::Value;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bosun"))
}

/// Whether Docker can run these tests. Without a daemon they are skipped, except under
/// CI=true, where that is a failure. The local images are built once (scripts/images.sh).
pub fn docker() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let info = Command::new("docker").arg("info").output();
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "docker info failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
            Err(e) => return Err(format!("docker not found: {e}")),
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/images.sh"))
            .arg("busybox")
            .output()
            .map_err(|e| format!("running images.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "images.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Docker is required under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

thread_local! {
    /// The directory of this test's cluster, for diagnostics.
    static DIR: std::cell::RefCell<Option<std::path::PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Three servers and `agents` Docker agents (worker-1..N) with a 500 ms first restart
/// back-off.
pub fn up(agents: usize) -> Cluster {
    let c = up_inner(agents);
    DIR.with(|d| *d.borrow_mut() = Some(c.dir.path().to_path_buf()));
    c
}

/// The last lines of this test's agent logs.
fn agent_logs() -> String {
    let Some(dir) = DIR.with(|d| d.borrow().clone()) else {
        return String::new();
    };
    let mut out = String::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("worker-") && name.ends_with(".log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} (last 40 lines)\n"));
            out.push_str(&lines[lines.len().saturating_sub(40)..].join("\n"));
            out.push('\n');
        }
    }
    out
}

fn up_inner(agents: usize) -> Cluster {
    let n = agents.to_string();
    match Cluster::up(
        bin(),
        3,
        &[
            "--agents",
            &n,
            "--backoff-ms",
            "500",
            "--heartbeat-ms",
            "1000",
        ],
    ) {
        Ok(c) => c,
        Err(e) => panic!("starting cluster: {e}"),
    }
}

pub fn admin(c: &Cluster) -> Client {
    let addrs: Vec<String> = ["s1", "s2", "s3"].iter().map(|s| c.endpoint(s)).collect();
    Client::connect(&addrs, &c.admin_tls()).unwrap()
}

/// Waits until the agents' Nodes are Ready; on failure, shows the agent's log.
pub async fn nodes_ready(c: &Cluster, client: &Client, names: &[&str]) {
    for n in names {
        let r = eventually(
            Duration::from_secs(30),
            &format!("node {n} ready"),
            || async {
                let node = client.get("nodes", "", n).await.ok()?;
                let ready = node["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                ready.then_some(())
            },
        )
        .await;
        if let Err(e) = r {
            let log =
                std::fs::read_to_string(c.dir.path().join(format!("{n}.log"))).unwrap_or_default();
            panic!("{e}\n{n}.log:\n{log}");
        }
    }
}

/// Polls pod `ns/name` until `f` accepts it.
pub async fn pod_until<F>(
    client: &Client,
    ns: &str,
    name: &str,
    secs: u64,
    what: &str,
    f: F,
) -> Value
where
    F: Fn(&Value) -> bool,
{
    let f = &f;
    match eventually(Duration::from_secs(secs), what, || async move {
        let p = client.get("pods", ns, name).await.ok()?;
        f(&p).then_some(p)
    })
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let last = client
                .get("pods", ns, name)
                .await
                .map(|p| p["status"].clone());
            // The agents' last words, to tell a slow Docker from a stuck worker.
            let logs = agent_logs();
            panic!("{e}; last status: {last:?}\nagent logs:\n{logs}")
        }
    }
}

pub fn status<'a>(p: &'a Value, container: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

pub fn running(p: &Value, container: &str) -> bool {
    !status(p, container)["state"]["running"].is_null()
}

pub fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn restarts(p: &Value, container: &str) -> i64 {
    status(p, container)["restartCount"].as_i64().unwrap_or(0)
}

/// `docker ARGS`, stdout; panics on failure.
pub fn docker_cmd(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ids of the containers with this label (`key=value`), sorted.
pub fn containers(label: &str) -> Vec<String> {
    let mut ids: Vec<String> = docker_cmd(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ])
    .lines()
    .map(str::to_string)
    .collect();
    ids.sort();
    ids
}

/// The id of the container of a pod's uid and container name (latest attempt).
pub fn container_id(p: &Value, container: &str) -> String {
    status(p, container)["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("docker://")
        .to_string()
}

/// Runs the bosun CLI with the cluster's admin config (or `config`).
pub fn cli_as(
    c: &Cluster,
    config: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .env("BOSUN_CONFIG", config)
        .current_dir(c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn cli(c: &Cluster, args: &[&str]) -> std::process::Output {
    cli_as(c, &c.dir.path().join("client.toml"), args, None)
}

/// A client config for user `name` in `group` (a certificate from the cluster CA).
pub fn user_config(c: &Cluster, name: &str, group: &str) -> std::path::PathBuf {
    let pki = c.dir.path().join("pki");
    let out = Command::new(bin())
        .args(["pki", "issue", "--dir"])
        .arg(&pki)
        .args(["--user", name, "--group", group])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = std::fs::read_to_string(c.dir.path().join("client.toml")).unwrap();
    let text = admin
        .replace("users/admin.crt", &format!("users/{name}.crt"))
        .replace("users/admin.key", &format!("users/{name}.key"));
    let path = c.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
