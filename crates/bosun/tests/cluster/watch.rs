//! Watches through the etcd API: start revision, prefix, prev_kv, progress, cancel, and
//! the compacted revision reported when history is gone.

use std::time::Duration;

use bosun_api::etcd::watch_client::WatchClient;
use bosun_api::etcd::watch_request::RequestUnion;
use bosun_api::etcd::{
    CompactionRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::util::*;

async fn next(stream: &mut Streaming<WatchResponse>) -> WatchResponse {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(r))) => r,
        other => panic!("no watch response: {other:?}"),
    }
}

fn create(key: &str, start: i64, prev_kv: bool) -> WatchRequest {
    let mut end = key.as_bytes().to_vec();
    if let Some(l) = end.last_mut() {
        *l += 1;
    }
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            range_end: end,
            start_revision: start,
            prev_kv,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_replay_follow_report_progress_cancel_and_report_compaction() {
    let c = up(3, &[]);
    let mut kv = c.kv("s1").unwrap();
    let first = put(&mut kv, "/w/a", "1").await.unwrap();
    put(&mut kv, "/w/a", "2").await.unwrap();
    put(&mut kv, "/other", "x").await.unwrap();

    // On a follower, from the first revision, with previous values.
    let l = leader(&c, &ALL).await;
    let follower = ALL.iter().copied().find(|n| *n != l).unwrap();
    let mut wc = WatchClient::new(c.channel_as(follower, &c.admin_tls()).unwrap());
    let (tx, rx) = mpsc::channel(8);
    let mut stream = wc
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(create("/w/", first, true)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created);
    let id = created.watch_id;
    let mut values = Vec::new();
    while values.len() < 2 {
        let r = next(&mut stream).await;
        for e in r.events {
            let kv = e.kv.unwrap();
            values.push((
                String::from_utf8_lossy(&kv.value).into_owned(),
                e.prev_kv
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
            ));
        }
    }
    assert_eq!(
        values,
        vec![
            ("1".to_string(), None),
            ("2".to_string(), Some("1".to_string()))
        ]
    );

    // A write on another server arrives live; a write outside the prefix does not.
    let mut kv_leader = c.kv(&l).unwrap();
    put(&mut kv_leader, "/other", "y").await.unwrap();
    let rev = put(&mut kv_leader, "/w/b", "3").await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kv.as_ref().unwrap().key, b"/w/b");
    assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, rev);

    // Progress: a revision at least as new as everything delivered.
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await
    .unwrap();
    let p = next(&mut stream).await;
    assert!(p.events.is_empty());
    assert!(p.header.unwrap().revision >= rev);

    // Cancel.
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: id,
        })),
    })
    .await
    .unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled && r.watch_id == id, "{r:?}");

    // After compaction, a watch from before it is refused with the compact revision.
    kv_leader
        .compact(CompactionRequest {
            revision: rev,
            physical: false,
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "compaction applied on the follower",
        || {
            let mut kv = c.kv(follower).unwrap();
            async move {
                let r = kv
                    .range(bosun_api::etcd::RangeRequest {
                        key: "/w/a".into(),
                        revision: first,
                        serializable: true,
                        ..Default::default()
                    })
                    .await;
                r.is_err().then_some(())
            }
        },
    )
    .await
    .unwrap();
    tx.send(create("/w/", first, false)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created);
    let r = next(&mut stream).await;
    assert!(r.canceled, "{r:?}");
    assert_eq!(r.compact_revision, rev);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_compacts_old_history_on_its_own() {
    let c = up(3, &["--compact", "10:100"]);
    let mut kv = c.kv("s1").unwrap();
    // The API server writes the cluster's default objects at start (the binding last):
    // wait for them, so that nothing else moves the revision during the test.
    eventually(Duration::from_secs(20), "default objects written", || {
        let mut kv = kv.clone();
        async move {
            get(
                &mut kv,
                "/registry/clusterrolebindings/cluster-admin",
                false,
            )
            .await
            .ok()
            .flatten()
        }
    })
    .await
    .unwrap();
    let mut last = 0;
    for i in 0..40 {
        last = put(&mut kv, "/c/k", &i.to_string()).await.unwrap();
    }
    let recent = last - 3;
    for n in ALL {
        let mut kv = c.kv(n).unwrap();
        eventually(Duration::from_secs(20), "old revisions compacted", || {
            let mut kv = kv.clone();
            async move {
                let r = kv
                    .range(bosun_api::etcd::RangeRequest {
                        key: "/c/k".into(),
                        revision: 2,
                        serializable: true,
                        ..Default::default()
                    })
                    .await;
                matches!(r, Err(s) if s.message().contains("compacted")).then_some(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{n}: {e}"));
        // Recent history stays readable.
        let r = kv
            .range(bosun_api::etcd::RangeRequest {
                key: "/c/k".into(),
                revision: recent,
                ..Default::default()
            })
            .await;
        assert!(r.is_ok(), "{n}: {r:?}");
    }
}
