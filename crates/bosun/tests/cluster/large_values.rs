//! Values up to the size limit commit, replicate to every server, and leave the cluster
//! working: no lost leader, no wedged replication, no election storm.

use std::time::Duration;

use bosun_api::etcd::{PutRequest, RangeRequest, StatusRequest};
use tonic::transport::Channel;

use crate::util::*;

/// What each operation may take at most before the test calls the cluster stuck.
const OP: Duration = Duration::from_secs(20);

/// `len` bytes that do not compress (a 64-bit LCG), different for each `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

async fn put_bytes(
    kv: &mut bosun_api::etcd::kv_client::KvClient<Channel>,
    key: &str,
    value: Vec<u8>,
) -> Result<i64, tonic::Status> {
    let put = kv.put(PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    });
    match tokio::time::timeout(OP, put).await {
        Ok(r) => Ok(r?.into_inner().header.map_or(0, |h| h.revision)),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "put {key} not answered within {OP:?}"
        ))),
    }
}

async fn get_bytes(c: &Cluster, name: &str, key: &str, serializable: bool) -> Option<Vec<u8>> {
    let mut kv = c.kv(name).unwrap();
    let range = kv.range(RangeRequest {
        key: key.into(),
        serializable,
        ..Default::default()
    });
    match tokio::time::timeout(OP, range).await {
        Ok(Ok(r)) => r.into_inner().kvs.into_iter().next().map(|kv| kv.value),
        Ok(Err(e)) => panic!("get {key} from {name}: {e}"),
        Err(_) => panic!("get {key} from {name} not answered within {OP:?}"),
    }
}

/// The highest Raft term any server reports.
async fn term(c: &Cluster) -> u64 {
    let mut max = 0;
    for n in ALL {
        let mut m = c.maintenance(n).unwrap();
        if let Ok(Ok(st)) = tokio::time::timeout(OP, m.status(StatusRequest {})).await {
            max = max.max(st.into_inner().raft_term);
        }
    }
    max
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_near_the_size_limit_commits_everywhere_and_the_cluster_keeps_working() {
    let c = up(3, &[]);
    let mut kv = c.kv("s1").unwrap();
    put(&mut kv, "/big/warm-up", "1").await.unwrap();
    let term_before = term(&c).await;

    // ~1.4 MiB: under the 1.5 MiB limit, far over what one heartbeat interval ships.
    let big = noise(1_468_006, 1);
    put_bytes(&mut kv, "/big/one", big.clone())
        .await
        .unwrap_or_else(|e| panic!("a 1.4 MiB put did not commit: {e}"));
    for n in ALL {
        let got = get_bytes(&c, n, "/big/one", false).await;
        assert!(got.as_ref() == Some(&big), "{n} has not the 1.4 MiB value");
    }

    // Several near the limit at once, through every server (the batcher must not fold
    // them into one oversized entry, nor wedge), with one just over the limit among them.
    let mut writes = tokio::task::JoinSet::new();
    for (i, n) in ALL.iter().cycle().take(5).enumerate() {
        let mut kv = c.kv(n).unwrap();
        let value = noise(1_468_006 + i * 1000, 10 + i as u64);
        writes.spawn(async move {
            let key = format!("/big/burst/{i}");
            put_bytes(&mut kv, &key, value.clone())
                .await
                .map(|_| (key, value))
        });
    }
    let mut over = c.kv("s2").unwrap();
    let err = put_bytes(&mut over, "/big/over", vec![b'x'; 1536 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let mut burst = Vec::new();
    while let Some(r) = writes.join_next().await {
        burst.push(r.unwrap().unwrap_or_else(|e| {
            for n in ALL {
                let log = c.log(n);
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!(
                    "==== {n}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("a burst put failed: {e}")
        }));
    }
    for (key, value) in &burst {
        for n in ALL {
            let got = get_bytes(&c, n, key, false).await;
            assert!(got.as_ref() == Some(value), "{n} has not {key}");
        }
    }
    for n in ALL {
        assert_eq!(get_bytes(&c, n, "/big/over", false).await, None);
    }

    // Small writes and reads still work everywhere, promptly.
    for (i, n) in ALL.iter().enumerate() {
        let mut kv = c.kv(n).unwrap();
        let key = format!("/big/small/{i}");
        tokio::time::timeout(Duration::from_secs(2), put(&mut kv, &key, "v"))
            .await
            .unwrap_or_else(|_| panic!("a small put to {n} hung"))
            .unwrap_or_else(|e| panic!("a small put to {n} failed: {e}"));
        for m in ALL {
            assert_eq!(
                get_bytes(&c, m, &key, false).await.as_deref(),
                Some(&b"v"[..])
            );
        }
    }
    // Every server eventually holds the big value in its own state machine too.
    for n in ALL {
        let got = get_bytes(&c, n, "/big/one", true).await;
        assert!(got.as_ref() == Some(&big), "{n} serves a different value");
    }

    // No election storm: one election at most (a loaded machine may cause one).
    let term_after = term(&c).await;
    assert!(
        term_after <= term_before + 1,
        "the raft term ran from {term_before} to {term_after}: repeated elections"
    );
}
