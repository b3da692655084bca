//! kill -9 the leader repeatedly while clients write: every acknowledged write survives,
//! a new leader is elected each time, and writes resume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_repeatedly_loses_no_acknowledged_write() {
    let c = Arc::new(up(3, &[]));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        writers.spawn(async move {
            let mut seq = 0u64;
            let mut target = w;
            while !stop.is_cancelled() {
                let name = ALL[target % 3];
                let Ok(mut kv) = c.kv(name) else { break };
                seq += 1;
                let (k, v) = (format!("/f/{w}/{seq:06}"), format!("{w}-{seq}"));
                match tokio::time::timeout(Duration::from_secs(3), put(&mut kv, &k, &v)).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().insert(k, v);
                    }
                    // Not acknowledged: may or may not be there; try another server.
                    _ => target += 1,
                }
            }
        });
    }
    let acks = || acked.lock().unwrap().len();
    for round in 0..3 {
        let before = acks();
        eventually(Duration::from_secs(20), "writes flowing", || async {
            (acks() >= before + 20).then_some(())
        })
        .await
        .unwrap();
        let old = leader(&c, &ALL).await;
        c.ctl(&["kill", &old]).unwrap();
        let others: Vec<&str> = ALL.iter().copied().filter(|n| *n != old).collect();
        let new = eventually(Duration::from_secs(20), "a new leader", || async {
            c.leader(&others).await.filter(|l| *l != old)
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_ne!(new, old);
        let after_kill = acks();
        eventually(
            Duration::from_secs(20),
            "writes resuming after the kill",
            || async { (acks() > after_kill + 10).then_some(()) },
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        c.ctl(&["start", &old]).unwrap();
    }
    stop.cancel();
    while writers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 60,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for n in ALL {
        let stored: BTreeMap<String, String> = eventually(
            Duration::from_secs(30),
            "every server caught up",
            || async {
                let d: BTreeMap<String, String> =
                    dump(&c, n, "/f/").await.ok()?.into_iter().collect();
                acked.keys().all(|k| d.contains_key(k)).then_some(d)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{n}: {e}"));
        for (k, v) in &acked {
            assert_eq!(stored.get(k), Some(v), "acknowledged write {k} on {n}");
        }
    }
}

/// Every key under `/w/` as `name`'s server holds it, serializably, at `revision` (0: the
/// current one): (key, create revision, mod revision, version, value), and the revision
/// the server answered at.
async fn records(
    c: &Cluster,
    name: &str,
    revision: i64,
) -> Option<(i64, Vec<(String, i64, i64, i64, String)>)> {
    let mut kv = c.kv(name).ok()?;
    let r = kv
        .range(bosun_api::etcd::RangeRequest {
            key: "/w/".into(),
            range_end: "/w0".into(),
            revision,
            serializable: true,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let kvs = r
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    Some((r.header.map_or(0, |h| h.revision), kvs))
}

/// The state machine writes without RocksDB's WAL (the Raft log is its WAL): kill -9 of
/// every server loses what its memtables held, and each server applies those entries again
/// from its log. Afterwards every key has the revisions, version and value it had, history
/// reads at an old revision still answer, and the next write takes the next revision.
/// Snapshots every 50 entries purge the log as the writes go on, so a snapshot must not let
/// the log go behind state that only memory held.
#[tokio::test(flavor = "multi_thread")]
async fn killing_every_server_loses_no_applied_state() {
    let c = up(3, &["--snapshot-every", "50"]);
    let l = leader(&c, &ALL).await;
    let mut kv = c.kv(&l).unwrap();
    let mut last = 0;
    for i in 0..400 {
        let k = format!("/w/{:03}", i % 70);
        if i % 9 == 8 {
            kv.delete_range(bosun_api::etcd::DeleteRangeRequest {
                key: k.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        } else {
            last = put(&mut kv, &k, &format!("v{i}")).await.unwrap();
        }
    }
    let now = revision(&mut kv).await;
    assert!(now >= last && last > 300, "revision {now}, last put {last}");
    let old = now / 2;
    let mut before = Vec::new();
    for n in ALL {
        let current = eventually(Duration::from_secs(30), "every server applied", || async {
            records(&c, n, 0).await.filter(|r| r.0 == now)
        })
        .await
        .unwrap_or_else(|e| panic!("{n}: {e}"));
        let history = records(&c, n, old).await.unwrap();
        before.push((current.1, history.1));
    }
    assert!(before.iter().all(|b| b == &before[0]), "servers differ");
    assert!(!before[0].0.is_empty() && !before[0].1.is_empty());
    for n in ALL {
        c.ctl(&["kill", n]).unwrap();
    }
    for n in ALL {
        c.ctl(&["start", n]).unwrap();
    }
    for (n, (current, history)) in ALL.iter().zip(&before) {
        let after = eventually(
            Duration::from_secs(30),
            "the restarted server applied its log again",
            || async { records(&c, n, 0).await.filter(|r| r.0 >= now) },
        )
        .await
        .unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(after.0, now, "{n}: revision after the restart");
        assert_eq!(&after.1, current, "{n}: keys after the restart");
        let old_after = records(&c, n, old).await.unwrap();
        assert_eq!(&old_after.1, history, "{n}: history at revision {old}");
    }
    let l = leader(&c, &ALL).await;
    let mut kv = c.kv(&l).unwrap();
    let next = put(&mut kv, "/w/next", "x").await.unwrap();
    assert_eq!(next, now + 1, "the first write after the restart");
}
