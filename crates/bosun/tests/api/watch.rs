//! Resource watches: on followers, across a server restart, after compaction.

use std::time::Duration;

use bosun_client::Event;
use futures::{Stream, StreamExt};
use serde_json::json;
use tonic::Code;

use crate::util::*;

/// The next non-bookmark event, or a panic after `secs`.
async fn next_event<S: Stream<Item = bosun_client::Result<Event>> + Unpin>(
    s: &mut S,
    secs: u64,
) -> Event {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(secs), s.next())
            .await
            .expect("no watch event in time")
            .expect("watch ended")
            .expect("watch failed");
        if ev.kind != "BOOKMARK" {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_on_a_follower_sees_writes_made_on_the_leader() {
    let c = up();
    let any = admin(&c);
    ready(&any).await;
    let leader = c.leader(&ALL).await.unwrap();
    let follower = ALL.iter().find(|n| **n != leader).unwrap();
    let on_leader = client_of(&c, &[&leader], &c.admin_tls());
    let on_follower = client_of(&c, &[follower], &c.admin_tls());
    let mut q = query("configmaps", "default");
    q.labels = "watched=yes".into();
    let mut w = Box::pin(on_follower.watch(&q, "", true).await.unwrap());
    // The initial state ends with a bookmark.
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, "BOOKMARK");

    let mut cm = configmap("default", "w1", json!({"v": "1"}));
    cm["metadata"]["labels"] = json!({"watched": "yes"});
    let created = on_leader
        .create("configmaps", "default", &cm)
        .await
        .unwrap();
    let ev = next_event(&mut w, 10).await;
    assert_eq!((ev.kind.as_str(), rv(&ev.object)), ("ADDED", rv(&created)));

    let mut moved = created.clone();
    moved["data"]["v"] = json!("2");
    on_leader.update("configmaps", "", &moved).await.unwrap();
    assert_eq!(next_event(&mut w, 10).await.kind, "MODIFIED");

    // Leaving the selection is a DELETED for this watcher.
    on_leader
        .patch(
            "configmaps",
            "default",
            "w1",
            "",
            &json!({"metadata": {"labels": {"watched": "no"}}}),
        )
        .await
        .unwrap();
    let ev = next_event(&mut w, 10).await;
    assert_eq!(ev.kind, "DELETED");
    assert_eq!(ev.object["metadata"]["name"], "w1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_after_a_server_restart_without_missing_or_repeating_events() {
    let c = up();
    let all = admin(&c);
    ready(&all).await;
    let s2 = client_of(&c, &["s2"], &c.admin_tls());
    let q = query("configmaps", "default");
    let mut w = Box::pin(s2.watch(&q, "", false).await.unwrap());
    let mut last = 0;
    for i in 0..5 {
        all.create(
            "configmaps",
            "default",
            &configmap("default", &format!("a{i}"), json!({})),
        )
        .await
        .unwrap();
        let ev = next_event(&mut w, 10).await;
        assert_eq!(ev.kind, "ADDED");
        assert_eq!(ev.object["metadata"]["name"], format!("a{i}"));
        last = rv(&ev.object);
    }
    c.ctl(&["stop", "s2"]).unwrap();
    // The stream ends with the server.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = w.next().await {
            if ev.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the watch did not end when its server stopped"
    );
    for i in 0..5 {
        all.create(
            "configmaps",
            "default",
            &configmap("default", &format!("b{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    c.ctl(&["start", "s2"]).unwrap();
    let mut w = eventually(
        Duration::from_secs(20),
        "s2 serves watches again",
        || async {
            s2.watch(&q, &last.to_string(), false)
                .await
                .ok()
                .map(Box::pin)
        },
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let ev = next_event(&mut w, 20).await;
        assert_eq!(ev.kind, "ADDED");
        assert!(rv(&ev.object) > last, "repeated an event: {}", ev.object);
        got.push(
            ev.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(got, vec!["b0", "b1", "b2", "b3", "b4"]);
    // And nothing else is pending.
    all.create(
        "configmaps",
        "default",
        &configmap("default", "c0", json!({})),
    )
    .await
    .unwrap();
    let ev = next_event(&mut w, 10).await;
    assert_eq!(ev.object["metadata"]["name"], "c0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_compacted_resource_version_is_told_it_expired() {
    let c = up();
    // One server for the writes, the compaction and the watch: a physical compaction
    // answers once the member that served it has applied it (etcd's contract too).
    let client = client_of(&c, &["s1"], &c.admin_tls());
    ready(&client).await;
    let first = client
        .create(
            "configmaps",
            "default",
            &configmap("default", "old", json!({})),
        )
        .await
        .unwrap();
    let mut latest = first.clone();
    for i in 0..3 {
        latest = client
            .create(
                "configmaps",
                "default",
                &configmap("default", &format!("n{i}"), json!({})),
            )
            .await
            .unwrap();
    }
    let mut kv = c.kv("s1").unwrap();
    kv.compact(bosun_api::etcd::CompactionRequest {
        revision: rv(&latest),
        physical: true,
    })
    .await
    .unwrap();
    let err = match client
        .watch(
            &query("configmaps", "default"),
            &(rv(&first) - 1).to_string(),
            false,
        )
        .await
    {
        Ok(_) => panic!("a watch from a compacted revision started"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err}");
    assert!(err.to_string().contains("Expired"), "{err}");
    // From the current revision it works.
    assert!(client
        .watch(
            &query("configmaps", "default"),
            &rv(&latest).to_string(),
            false
        )
        .await
        .is_ok());
}

/// Watches of one server share what they send (watch::memo): each must still see exactly
/// its own events, with selector transitions and deletions as Kubernetes reports them.
#[tokio::test(flavor = "multi_thread")]
async fn watches_with_different_selectors_on_one_server_each_see_their_own_events() {
    let c = up();
    let all = admin(&c);
    ready(&all).await;
    let s2 = client_of(&c, &["s2"], &c.admin_tls());
    let ns = "shared";
    all.create(
        "namespaces",
        "",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .unwrap();
    let watch = |labels: &str, fields: &str| {
        let mut q = query("configmaps", ns);
        q.labels = labels.into();
        q.fields = fields.into();
        let s2 = s2.clone();
        async move { Box::pin(s2.watch(&q, "", false).await.unwrap()) }
    };
    let mut every = watch("", "").await;
    let mut tier_a = watch("tier=a", "").await;
    let mut named = watch("", "metadata.name=one").await;
    // A second unselected watch: the memo's records must serve both whole.
    let mut every2 = watch("", "").await;

    let labelled = |name: &str, tier: &str| {
        let mut cm = configmap(ns, name, json!({"v": name}));
        cm["metadata"]["labels"] = json!({ "tier": tier });
        cm
    };
    let relabel = |tier: &str| json!({"metadata": {"labels": {"tier": tier}}});
    // Each step, and the resource version of what it wrote.
    let mut rvs = Vec::new();
    rvs.push(rv(&all
        .create("configmaps", ns, &labelled("one", "a"))
        .await
        .unwrap()));
    rvs.push(rv(&all
        .create("configmaps", ns, &labelled("two", "b"))
        .await
        .unwrap()));
    rvs.push(rv(&all
        .patch("configmaps", ns, "one", "", &relabel("b"))
        .await
        .unwrap()));
    rvs.push(rv(&all
        .patch("configmaps", ns, "two", "", &relabel("a"))
        .await
        .unwrap()));
    all.delete("configmaps", ns, "one", None).await.unwrap();
    all.delete("configmaps", ns, "two", None).await.unwrap();
    // Seen by every watch: what each saw before it is all it saw.
    rvs.push(rv(&all
        .create("configmaps", ns, &labelled("one", "a"))
        .await
        .unwrap()));

    type Seen = Vec<(String, String, String)>;
    async fn seen<S: Stream<Item = bosun_client::Result<Event>> + Unpin>(
        s: &mut S,
        n: usize,
    ) -> Seen {
        let mut out = Vec::new();
        for _ in 0..n {
            let ev = next_event(s, 10).await;
            let meta = &ev.object["metadata"];
            let tier = meta["labels"]["tier"].as_str().unwrap_or("").to_string();
            let name = meta["name"].as_str().unwrap_or("").to_string();
            out.push((ev.kind, name, tier));
        }
        out
    }
    let e =
        |kind: &str, name: &str, tier: &str| (kind.to_string(), name.to_string(), tier.to_string());
    let everything = vec![
        e("ADDED", "one", "a"),
        e("ADDED", "two", "b"),
        e("MODIFIED", "one", "b"),
        e("MODIFIED", "two", "a"),
        e("DELETED", "one", "b"),
        e("DELETED", "two", "a"),
        e("ADDED", "one", "a"),
    ];
    assert_eq!(seen(&mut every, 7).await, everything);
    assert_eq!(seen(&mut every2, 7).await, everything);
    assert_eq!(
        seen(&mut tier_a, 4).await,
        vec![
            e("ADDED", "one", "a"),
            // Leaving the selection: the object as it is now.
            e("DELETED", "one", "b"),
            e("ADDED", "two", "a"),
            e("DELETED", "two", "a"),
        ]
    );
    assert_eq!(seen(&mut tier_a, 1).await, vec![e("ADDED", "one", "a")]);
    assert_eq!(
        seen(&mut named, 4).await,
        vec![
            e("ADDED", "one", "a"),
            e("MODIFIED", "one", "b"),
            e("DELETED", "one", "b"),
            e("ADDED", "one", "a"),
        ]
    );

    // Resource versions: a write's event carries the version the write returned; a
    // deletion's event carries the deletion's, above every earlier one.
    let mut w = Box::pin(
        s2.watch(&query("configmaps", ns), &rvs[0].to_string(), false)
            .await
            .unwrap(),
    );
    let mut got = Vec::new();
    for _ in 0..6 {
        let ev = next_event(&mut w, 10).await;
        got.push((ev.kind, rv(&ev.object)));
    }
    assert_eq!(got[0], ("ADDED".to_string(), rvs[1]));
    assert_eq!(got[1], ("MODIFIED".to_string(), rvs[2]));
    assert_eq!(got[2], ("MODIFIED".to_string(), rvs[3]));
    assert!(got[3].0 == "DELETED" && got[3].1 > rvs[3], "{got:?}");
    assert!(got[4].0 == "DELETED" && got[4].1 > got[3].1, "{got:?}");
    assert_eq!(got[5], ("ADDED".to_string(), rvs[4]));
}
