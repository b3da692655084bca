//! Secrets are encrypted at rest; the audit log records who changed what.

use std::time::Duration;

use bosun_api::etcd::RangeRequest;
use serde_json::json;

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_never_visible_in_the_raw_store_and_is_read_back_by_those_allowed() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
        "stringData": {"password": "hunter2-plaintext"}});
    client.create("secrets", "default", &secret).await.unwrap();
    let back = client.get("secrets", "default", "db").await.unwrap();
    // stringData is folded into data, base64 as Kubernetes returns it.
    assert_eq!(back["data"]["password"], "aHVudGVyMi1wbGFpbnRleHQ=");
    assert!(back.get("stringData").is_none());
    for n in ALL {
        let mut kv = c.kv(n).unwrap();
        let raw = kv
            .range(RangeRequest {
                key: b"/registry/secrets/default/db".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let value = &raw.kvs[0].value;
        assert!(
            value.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
            "not encrypted on {n}"
        );
        for needle in [&b"hunter2"[..], b"aHVudGVyMi1wbGFpbnRleHQ=", b"password"] {
            assert!(
                !value.windows(needle.len()).any(|w| w == needle),
                "plaintext in the store on {n}"
            );
        }
    }
    // Other kinds are stored as plain JSON.
    client
        .create(
            "configmaps",
            "default",
            &configmap("default", "plain", json!({"k": "visible"})),
        )
        .await
        .unwrap();
    let mut kv = c.kv("s1").unwrap();
    let raw = kv
        .range(RangeRequest {
            key: b"/registry/configmaps/default/plain".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(String::from_utf8_lossy(&raw.kvs[0].value).contains("visible"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutating_request_is_audited_with_its_user_and_outcome() {
    let c = up();
    let client = client_of(&c, &["s1"], &c.admin_tls());
    ready(&client).await;
    let eve = client_of(&c, &["s1"], &user(&c, "eve", None));
    client
        .create(
            "configmaps",
            "default",
            &configmap("default", "audited", json!({})),
        )
        .await
        .unwrap();
    assert!(eve
        .delete("configmaps", "default", "audited", None)
        .await
        .is_err());
    let log = c.dir.path().join("data/s1/audit.log");
    let lines = eventually(Duration::from_secs(5), "audit lines", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.iter().any(|l| l["user"] == "eve")).then_some(lines)
    })
    .await
    .unwrap();
    let created = lines
        .iter()
        .find(|l| l["verb"] == "create" && l["name"] == "audited")
        .expect("the create is audited");
    assert_eq!(created["user"], "admin");
    assert_eq!(created["code"], "Ok");
    let denied = lines.iter().find(|l| l["user"] == "eve").unwrap();
    assert_eq!(denied["verb"], "delete");
    assert_eq!(denied["code"], "PermissionDenied");
    assert!(denied["message"].as_str().unwrap_or("").contains("eve"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secrets_key_is_rotated_without_losing_a_secret() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
        "stringData": {"password": "rotate-me"}});
    client.create("secrets", "default", &secret).await.unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("BOSUN_CONFIG", c.dir.path().join("client.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pki = c.pki();
    run(&["pki", "rotate-secrets-key", "--dir", pki.to_str().unwrap()]);
    for n in ALL {
        c.ctl(&["stop", n]).unwrap();
        c.ctl(&["start", n]).unwrap();
    }
    ready(&client).await;
    assert!(raw(&c).await.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    // The old key still decrypts.
    let back = eventually(
        Duration::from_secs(20),
        "secret readable after restarts",
        || async { client.get("secrets", "default", "db").await.ok() },
    )
    .await
    .unwrap();
    assert_eq!(back["data"]["password"], "cm90YXRlLW1l");
    let out = run(&["secrets", "reencrypt", "-A"]);
    assert!(out.contains("1 rewritten"), "{out}");
    assert!(raw(&c).await.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    let out = run(&["secrets", "reencrypt", "-A"]);
    assert!(out.contains("0 rewritten"), "{out}");
    let back = client.get("secrets", "default", "db").await.unwrap();
    assert_eq!(back["data"]["password"], "cm90YXRlLW1l");
}

async fn raw(c: &Cluster) -> Vec<u8> {
    let mut kv = c.kv("s1").unwrap();
    kv.range(RangeRequest {
        key: b"/registry/secrets/default/db".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .kvs[0]
        .value
        .clone()
}
