//! Fixtures of the API tests.

use std::path::Path;
use std::time::Duration;

use bosun_client::{Client, Query};
use bosun_pki::TlsMaterial;
pub use bosun_testkit::{eventually, Cluster};
use serde_json::{json, Value};

pub const ALL: [&str; 3] = ["s1", "s2", "s3"];

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bosun"))
}

pub fn up() -> Cluster {
    match Cluster::up(bin(), 3, &[]) {
        Ok(c) => c,
        Err(e) => panic!("starting cluster: {e}"),
    }
}

/// Issues a user certificate (`--group` optional) and returns its TLS files.
pub fn user(c: &Cluster, name: &str, group: Option<&str>) -> TlsMaterial {
    let pki = c.pki();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["pki", "issue", "--dir"])
        .arg(&pki)
        .args(["--user", name]);
    if let Some(g) = group {
        cmd.args(["--group", g]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    TlsMaterial {
        ca: pki.join("ca.crt"),
        cert: pki.join(format!("users/{name}.crt")),
        key: pki.join(format!("users/{name}.key")),
    }
}

/// Issues a node certificate.
pub fn node(c: &Cluster, name: &str) -> TlsMaterial {
    let pki = c.pki();
    let out = std::process::Command::new(bin())
        .args(["pki", "issue", "--dir"])
        .arg(&pki)
        .args(["--node", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    TlsMaterial {
        ca: pki.join("ca.crt"),
        cert: pki.join(format!("nodes/{name}.crt")),
        key: pki.join(format!("nodes/{name}.key")),
    }
}

/// A client of the given servers with the given identity.
pub fn client_of(c: &Cluster, servers: &[&str], tls: &TlsMaterial) -> Client {
    let addrs: Vec<String> = servers.iter().map(|s| c.endpoint(s)).collect();
    Client::connect(&addrs, tls).unwrap()
}

/// An administrator's client of every server.
pub fn admin(c: &Cluster) -> Client {
    client_of(c, &ALL, &c.admin_tls())
}

/// Waits until the default objects exist (every server creates them once a leader is up).
pub async fn ready(client: &Client) {
    eventually(
        Duration::from_secs(20),
        "default namespace and roles",
        || async {
            let ns = client.get("namespaces", "", "default").await.ok()?;
            let role = client.get("clusterroles", "", "view").await.ok()?;
            Some((ns, role))
        },
    )
    .await
    .unwrap();
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

pub fn configmap(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
}

pub fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn query(resource: &str, ns: &str) -> Query {
    Query {
        resource: resource.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

pub fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
