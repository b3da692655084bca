//! A three-server cluster replicates, serves reads everywhere and keeps its data across a
//! full restart.

use std::collections::BTreeSet;
use std::time::Duration;

use bosun_api::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use bosun_api::etcd::{request_op, Compare, PutRequest, RequestOp, TxnRequest};

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_write_on_one_server_is_read_linearizably_on_every_other() {
    let c = up(3, &[]);
    let mut kv1 = c.kv("s1").unwrap();
    let rev = put(&mut kv1, "/t/a", "1").await.unwrap();
    assert!(rev > 0);
    for n in ALL {
        let mut kv = c.kv(n).unwrap();
        assert_eq!(
            get(&mut kv, "/t/a", false).await.unwrap().as_deref(),
            Some("1"),
            "on {n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_whole_cluster_keeps_every_key_and_the_revision() {
    let c = up(3, &[]);
    let mut kv = c.kv("s2").unwrap();
    for i in 0..50 {
        put(&mut kv, &format!("/r/{i:03}"), &format!("v{i}"))
            .await
            .unwrap();
    }
    let before = dump(&c, "s1", "/r/").await.unwrap();
    let rev_before = revision(&mut kv).await;
    for n in ALL {
        c.ctl(&["kill", n]).unwrap();
    }
    for n in ALL {
        c.ctl(&["start", n]).unwrap();
    }
    leader(&c, &ALL).await;
    for n in ALL {
        let after = eventually(
            Duration::from_secs(20),
            "data back after restart",
            || async {
                dump(&c, n, "/r/")
                    .await
                    .ok()
                    .filter(|d| d.len() == before.len())
            },
        )
        .await
        .unwrap();
        assert_eq!(after, before, "data on {n} after restart");
        let mut kv = c.kv(n).unwrap();
        let rev = revision(&mut kv).await;
        assert_eq!(rev, rev_before, "revision on {n} after restart");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_data_dir_is_gone_refuses_to_rejoin_and_says_how_to_recover() {
    let c = up(3, &[]);
    let mut kv = c.kv("s1").unwrap();
    for i in 0..5 {
        put(&mut kv, &format!("/d/{i}"), "v").await.unwrap();
    }
    let l = leader(&c, &ALL).await;
    let lost = ALL.iter().copied().find(|n| *n != l).unwrap();
    c.ctl(&["kill", lost]).unwrap();
    std::fs::remove_dir_all(c.dir.path().join("data").join(lost)).unwrap();
    c.ctl(&["start", lost]).unwrap();
    let log = eventually(Duration::from_secs(20), "the server to refuse", || async {
        let log = c.log(lost);
        log.contains("lost its state").then_some(log)
    })
    .await
    .unwrap();
    assert!(log.contains("remove-member"), "{log}");
    // The rest of the cluster is unharmed.
    let others: Vec<&str> = ALL.iter().copied().filter(|n| *n != lost).collect();
    for n in others {
        assert_eq!(dump(&c, n, "/d/").await.unwrap().len(), 5);
    }
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_metrics_are_served_in_prometheus_text_on_the_admin_port() {
    let c = up(3, &[]);
    let mut kv = c.kv("s1").unwrap();
    put(&mut kv, "/m", "1").await.unwrap();
    let l = leader(&c, &ALL).await;
    let body = http_get(&format!("{}:2381", c.ip(&l)), "/metrics").await;
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    for name in [
        "bosun_raft_term ",
        "bosun_raft_is_leader 1",
        "bosun_raft_leader_changes_total ",
        "bosun_raft_commit_index ",
        "bosun_raft_applied_index ",
        "bosun_proposal_duration_seconds_bucket{le=\"+Inf\"} ",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    let health = http_get(&format!("{}:2381", c.ip("s1")), "/health").await;
    assert!(health.contains("\"health\":\"true\""), "{health}");
}

/// Clients on every server write at once: the followers forward their batches and the
/// leader folds them into its own log entries. Each write must still get its own
/// outcome: its own revision, the previous value of its own key, and its own
/// transaction's verdict, whether it succeeded or failed.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_through_every_server_each_get_their_own_outcome() {
    const TASKS: usize = 12;
    const ROUNDS: usize = 15;
    let c = up(3, &[]);
    let mut tasks = tokio::task::JoinSet::new();
    for n in ALL {
        for t in 0..TASKS {
            let mut kv = c.kv(n).unwrap();
            let key = format!("/fold/{n}-{t:02}");
            tasks.spawn(async move {
                let mut revisions = Vec::new();
                for round in 0..ROUNDS {
                    let r = kv
                        .put(PutRequest {
                            key: key.clone().into(),
                            value: format!("{round}").into(),
                            prev_kv: true,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| format!("{key} put {round}: {e}"))?
                        .into_inner();
                    let prev = r.prev_kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                    let want = round.checked_sub(1).map(|p| p.to_string());
                    if prev != want {
                        return Err(format!("{key} put {round}: previous value {prev:?}, want {want:?}"));
                    }
                    revisions.push(r.header.map_or(0, |h| h.revision));
                    // The key is at version round + 1: one compare holds, the other not.
                    for (version, holds) in [(round as i64 + 1, true), (round as i64, false)] {
                        let t = kv
                            .txn(TxnRequest {
                                compare: vec![Compare {
                                    result: CompareResult::Equal as i32,
                                    target: CompareTarget::Version as i32,
                                    key: key.clone().into(),
                                    target_union: Some(TargetUnion::Version(version)),
                                    range_end: vec![],
                                }],
                                success: vec![RequestOp {
                                    request: Some(request_op::Request::RequestPut(PutRequest {
                                        key: format!("{key}/ok").into(),
                                        value: format!("{round}").into(),
                                        ..Default::default()
                                    })),
                                }],
                                failure: vec![],
                            })
                            .await
                            .map_err(|e| format!("{key} txn {round}: {e}"))?
                            .into_inner();
                        if t.succeeded != holds {
                            return Err(format!("{key} txn {round} on version {version}: succeeded {}, want {holds}", t.succeeded));
                        }
                        if holds {
                            revisions.push(t.header.map_or(0, |h| h.revision));
                        }
                    }
                }
                Ok::<_, String>(revisions)
            });
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        for rev in r.unwrap().unwrap() {
            assert!(
                rev > 0 && seen.insert(rev),
                "revision {rev} reported to two writes"
            );
        }
    }
    assert_eq!(seen.len(), 3 * TASKS * ROUNDS * 2);
    // Every successful transaction wrote its key, once per round.
    let oks = dump(&c, "s1", "/fold/").await.unwrap();
    assert_eq!(
        oks.iter().filter(|(k, _)| k.ends_with("/ok")).count(),
        3 * TASKS
    );
    // Summed over the servers: whichever led folded followers' batches.
    let mut folded = 0u64;
    for n in ALL {
        let body = http_get(&format!("{}:2381", c.ip(n)), "/metrics").await;
        folded += body
            .lines()
            .find_map(|l| l.strip_prefix("bosun_forwarded_batches_folded_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no fold counter on {n}:\n{body}"));
    }
    assert!(folded > 0, "no leader folded a forwarded batch");
}
