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

/// The `/metrics` body of server `n`'s admin port.
async fn metrics_of(c: &Cluster, n: &str) -> String {
    http_get(&format!("{}:2381", c.ip(n)), "/metrics").await
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
    let body = metrics_of(&c, &l).await;
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
        let body = metrics_of(&c, n).await;
        folded += body
            .lines()
            .find_map(|l| l.strip_prefix("bosun_forwarded_batches_folded_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no fold counter on {n}:\n{body}"));
    }
    assert!(folded > 0, "no leader folded a forwarded batch");
}

/// The value of a counter in a `/metrics` body.
fn counter(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
}

/// Linearizable reads share read-index rounds (concurrent reads on one server wait for
/// one round). Shared or not, a read that starts after a write was acknowledged must
/// see it: readers on the leader and on a follower check every value they read against
/// the last write acknowledged before their read began, while a writer keeps writing.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_linearizable_reads_share_rounds_and_never_miss_an_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    const READERS: usize = 16;
    const WRITES: i64 = 150;
    let c = up(3, &[]);
    let l = leader(&c, &ALL).await;
    let f = ALL.iter().copied().find(|n| *n != l).unwrap();
    let mut w = c.kv(&l).unwrap();
    put(&mut w, "/lin/n", "0").await.unwrap();
    let before = [metrics_of(&c, &l).await, metrics_of(&c, f).await];
    let acked = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for n in [l.as_str(), f] {
        for r in 0..READERS {
            let mut kv = c.kv(n).unwrap();
            let (acked, done, n) = (acked.clone(), done.clone(), n.to_string());
            readers.spawn(async move {
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let floor = acked.load(Ordering::SeqCst);
                    let got = get(&mut kv, "/lin/n", false)
                        .await
                        .map_err(|e| format!("reader {r} on {n}: {e}"))?;
                    let got: i64 = got.and_then(|v| v.parse().ok()).unwrap_or(-1);
                    if got < floor {
                        return Err(format!(
                            "reader {r} on {n} read {got} after write {floor} was acknowledged"
                        ));
                    }
                    reads += 1;
                }
                Ok::<_, String>(reads)
            });
        }
    }
    for i in 1..=WRITES {
        put(&mut w, "/lin/n", &i.to_string()).await.unwrap();
        acked.store(i, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    while let Some(r) = readers.join_next().await {
        reads += r.unwrap().unwrap();
    }
    assert!(reads >= 2 * READERS as u64, "only {reads} reads");
    for (n, before) in [l.as_str(), f].into_iter().zip(before) {
        let after = metrics_of(&c, n).await;
        let delta = |name: &str| counter(&after, name) - counter(&before, name);
        let (rounds, barriers) = (
            delta("bosun_read_index_rounds_total"),
            delta("bosun_read_barriers_total"),
        );
        // Each of 16 concurrent readers waits for the next round; without sharing,
        // every barrier is a round of its own.
        assert!(
            barriers >= READERS as u64 && rounds * 2 <= barriers,
            "on {n}: {rounds} rounds for {barriers} read barriers"
        );
    }
}
