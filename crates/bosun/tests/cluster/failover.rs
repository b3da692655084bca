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
