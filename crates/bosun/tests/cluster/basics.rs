//! A three-server cluster replicates, serves reads everywhere and keeps its data across a
//! full restart.

use std::time::Duration;

use bosun_api::etcd::RangeRequest;

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
    let rev_before = kv
        .range(RangeRequest {
            key: "/r/000".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
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
        let rev = kv
            .range(RangeRequest {
                key: "/r/000".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        assert_eq!(rev, rev_before, "revision on {n} after restart");
    }
}
