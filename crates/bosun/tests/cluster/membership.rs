//! Membership changes through learners: a fourth server joins, catches up, becomes a
//! voter, and is removed again.

use std::process::Command;
use std::time::Duration;

use bosun_api::etcd::cluster_client::ClusterClient;
use bosun_api::etcd::MemberListRequest;

use crate::util::*;

fn bosun(c: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(c.dir.path().join("client.toml"))
        .output()
        .unwrap()
}

async fn members(c: &Cluster) -> Vec<(String, bool)> {
    let mut cl = ClusterClient::new(c.channel_as("s1", &c.admin_tls()).unwrap());
    let r = cl
        .member_list(MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner();
    let mut m: Vec<(String, bool)> = r
        .members
        .into_iter()
        .map(|m| (m.name, m.is_learner))
        .collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_joins_as_learner_becomes_voter_and_leaves() {
    let c = up(3, &[]);
    let mut kv = c.kv("s1").unwrap();
    put(&mut kv, "/m/before", "1").await.unwrap();
    c.ctl(&["join", "s4"]).unwrap();
    let ip = c.ip("s4");
    let out = bosun(
        &c,
        &["cluster", "add-member", "s4", "--address", &ip, "--id", "4"],
    );
    assert!(
        out.status.success(),
        "add-member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        members(&c).await,
        vec![
            ("s1".into(), false),
            ("s2".into(), false),
            ("s3".into(), false),
            ("s4".into(), false)
        ]
    );
    let mut kv4 = c.kv("s4").unwrap();
    eventually(Duration::from_secs(20), "s4 to have the data", || {
        let mut kv4 = kv4.clone();
        async move { get(&mut kv4, "/m/before", true).await.ok().flatten() }
    })
    .await
    .unwrap();
    put(&mut kv4, "/m/after", "2").await.unwrap();
    assert_eq!(
        get(&mut kv, "/m/after", false).await.unwrap().as_deref(),
        Some("2")
    );

    let out = bosun(&c, &["cluster", "remove-member", "s4"]);
    assert!(
        out.status.success(),
        "remove-member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(members(&c).await.len(), 3);
    let out = bosun(&c, &["cluster", "remove-member", "s9"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no member named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bosun(&c, &["cluster", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("leader"));
}
