//! `CreateBatch` and `PatchBatch`: many creates, pod bindings or patches in one call, each
//! item answered as it would be alone; a watch marks the events of one write of several
//! objects.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tonic::Code;

use crate::util::*;

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "bosun/busybox:latest"}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answers_every_item_as_alone_and_writes_the_good_ones_at_one_revision() {
    let c = up();
    let a = admin(&c);
    ready(&a).await;
    a.create("namespaces", "", &namespace("b1")).await.unwrap();
    a.create("pods", "b1", &pod("taken")).await.unwrap();
    let mut generated = pod("");
    generated["metadata"] = json!({"generateName": "gen-"});
    let mut bad_name = pod("Not_A_Name");
    bad_name["metadata"]["name"] = json!("Not_A_Name");
    let items = vec![
        pod("p1"),
        pod("taken"),
        bad_name,
        generated,
        pod("p2"),
        pod("p1"),
    ];
    let results = a.create_batch("pods", "b1", &items).await.unwrap();
    assert_eq!(results.len(), items.len());
    let code = |i: usize| results[i].as_ref().err().and_then(|e| e.code());
    let ok: Vec<&Value> = [0, 3, 4]
        .iter()
        .map(|i| {
            results[*i]
                .as_ref()
                .unwrap_or_else(|e| panic!("item {i}: {e}"))
        })
        .collect();
    assert_eq!(code(1), Some(Code::AlreadyExists), "{:?}", results[1]);
    assert_eq!(code(2), Some(Code::InvalidArgument), "{:?}", results[2]);
    let msg = results[2].as_ref().unwrap_err().to_string();
    assert!(msg.contains("metadata.name"), "{msg}");
    assert_eq!(code(5), Some(Code::AlreadyExists), "{:?}", results[5]);
    let missing = a
        .create_batch("pods", "missing-ns", &[pod("x")])
        .await
        .unwrap();
    let err = missing[0].as_ref().unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(err.to_string().contains("missing-ns"), "{err}");
    assert!(ok[1]["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("gen-")));
    // Written together: one transaction, one revision.
    assert_eq!(rv(ok[0]), rv(ok[1]));
    assert_eq!(rv(ok[0]), rv(ok[2]));
    let listed = a.list(&query("pods", "b1")).await.unwrap();
    let mut got = names(&listed.items);
    got.sort();
    let generated_name = ok[1]["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut want = vec![
        "p1".to_string(),
        "p2".into(),
        "taken".into(),
        generated_name,
    ];
    want.sort();
    assert_eq!(got, want);

    // Brief answers: each item's identity and version, its outcome as before.
    let mut copy = pod("");
    copy["metadata"] = json!({"generateName": "brief-"});
    let brief = a
        .brief()
        .create_copies("pods", "b1", &copy, 3)
        .await
        .unwrap();
    assert_eq!(brief.len(), 3);
    let taken = a
        .brief()
        .create_batch("pods", "b1", &[pod("taken")])
        .await
        .unwrap();
    assert_eq!(
        taken[0].as_ref().unwrap_err().code(),
        Some(Code::AlreadyExists)
    );
    for r in &brief {
        let obj = r.as_ref().unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with("brief-"), "{obj}");
        assert_eq!(
            (&obj["kind"], &obj["metadata"]["namespace"]),
            (&json!("Pod"), &json!("b1"))
        );
        assert!(
            obj.get("spec").is_none(),
            "a brief answer has no spec: {obj}"
        );
        let stored = a.get("pods", "b1", name).await.unwrap();
        assert_eq!(obj["metadata"]["uid"], stored["metadata"]["uid"]);
        assert_eq!(rv(obj), rv(&stored));
    }
    // Copies are admitted once for the batch: each is a whole pod of its own, alike but
    // for its name, uid and creation time.
    let mut stored = Vec::new();
    for r in &brief {
        let name = r.as_ref().unwrap()["metadata"]["name"]
            .as_str()
            .unwrap_or("");
        stored.push(a.get("pods", "b1", name).await.unwrap());
    }
    let generated = |p: &Value, f: &str| p["metadata"][f].as_str().unwrap_or("").to_string();
    let uids: std::collections::HashSet<String> =
        stored.iter().map(|p| generated(p, "uid")).collect();
    assert_eq!(uids.len(), 3, "{uids:?}");
    let mut alike: Vec<Value> = stored.clone();
    for p in &mut alike {
        assert!(!generated(p, "creationTimestamp").is_empty(), "{p}");
        assert_eq!(p["spec"]["restartPolicy"], "Always", "defaulted: {p}");
        let meta = p["metadata"].as_object_mut().unwrap();
        for f in ["name", "uid", "creationTimestamp"] {
            meta.remove(f);
        }
    }
    assert_eq!(alike[0], alike[1]);
    assert_eq!(alike[0], alike[2]);
    // Copies of a template admission refuses: each is refused, naming the field.
    let mut bad = copy.clone();
    bad["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
    let refused = a.create_copies("pods", "b1", &bad, 3).await.unwrap();
    assert_eq!(refused.len(), 3);
    for r in &refused {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
        assert!(e.to_string().contains("imagePullPolice"), "{e}");
    }

    // Too many items: the call as a whole is refused, and nothing is written.
    let req = bosun_api::resources::BatchWriteRequest {
        resource: "configmaps".into(),
        namespace: "b1".into(),
        objects: (0..1001)
            .map(|i| serde_json::to_vec(&configmap("b1", &format!("c{i}"), json!({}))).unwrap())
            .collect(),
        ..Default::default()
    };
    let err = raw_batch(&c, req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 1000"), "{}", err.message());
    assert!(a
        .list(&query("configmaps", "b1"))
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn raw_batch(
    c: &Cluster,
    req: bosun_api::resources::BatchWriteRequest,
) -> Result<bosun_api::resources::BatchReply, tonic::Status> {
    let ch = c.channel_as("s1", &c.admin_tls()).unwrap();
    let mut client = bosun_api::resources::resources_client::ResourcesClient::new(ch)
        .max_encoding_message_size(64 << 20);
    client.create_batch(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_bindings_bind_each_pod_once_and_a_watch_sees_them_as_one_write() {
    let c = up();
    let a = admin(&c);
    ready(&a).await;
    a.create("namespaces", "", &namespace("b2")).await.unwrap();
    let pods: Vec<Value> = (0..5).map(|i| pod(&format!("p{i}"))).collect();
    for r in a.create_batch("pods", "b2", &pods).await.unwrap() {
        r.unwrap();
    }
    a.bind("b2", "p4", "node-x").await.unwrap();
    let mut events = Box::pin(
        a.watch(
            &query("pods", "b2"),
            &a.list(&query("pods", "b2")).await.unwrap().resource_version,
            false,
        )
        .await
        .unwrap(),
    );
    let bindings: Vec<(String, String, String)> = [
        ("p0", "n1"),
        ("p1", "n2"),
        ("p2", "n1"),
        ("gone", "n1"),
        ("p4", "n3"),
    ]
    .iter()
    .map(|(p, n)| ("b2".to_string(), p.to_string(), n.to_string()))
    .collect();
    let results = a.bind_batch(&bindings).await.unwrap();
    for i in 0..3 {
        let pod = results[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("binding {i}: {e}"));
        assert_eq!(pod["spec"]["nodeName"], bindings[i].2.as_str());
    }
    assert_eq!(
        results[3].as_ref().unwrap_err().code(),
        Some(Code::NotFound)
    );
    let err = results[4].as_ref().unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("already assigned"), "{err}");
    assert_eq!(
        a.get("pods", "b2", "p4").await.unwrap()["spec"]["nodeName"],
        "node-x"
    );
    // The three bindings are one write: the watch marks all but the last event of it.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch goes on")
            .unwrap();
        seen.push((rv(&ev.object), ev.more));
    }
    assert!(seen.iter().all(|(r, _)| *r == seen[0].0), "{seen:?}");
    let more: Vec<bool> = seen.iter().map(|(_, m)| *m).collect();
    assert_eq!(more, [true, true, false]);
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_status_patches_answer_each_pod_as_alone_and_write_the_good_ones_together() {
    let c = up();
    let a = admin(&c);
    ready(&a).await;
    a.create("namespaces", "", &namespace("b3")).await.unwrap();
    let pods: Vec<Value> = (0..4).map(|i| pod(&format!("p{i}"))).collect();
    for r in a.create_batch("pods", "b3", &pods).await.unwrap() {
        r.unwrap();
    }
    for (p, n) in [("p0", "n1"), ("p1", "n1"), ("p2", "n1"), ("p3", "n2")] {
        a.bind("b3", p, n).await.unwrap();
    }
    let p2 = a.get("pods", "b3", "p2").await.unwrap();
    let running = json!({"status": {"phase": "Running"}});
    let patches: Vec<(String, String, Value)> = [
        ("p0", running.clone()),
        // A pinned resource version that is not the stored one: a conflict.
        (
            "p1",
            json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "Running"}}),
        ),
        ("gone", running.clone()),
        // An invalid status: refused, naming the field.
        ("p2", json!({"status": {"podIP": 5}})),
        ("p3", running.clone()),
        // The same pod again: applied after the first.
        ("p0", json!({"status": {"podIP": "10.0.0.9"}})),
    ]
    .iter()
    .map(|(p, v)| ("b3".to_string(), p.to_string(), v.clone()))
    .collect();
    let results = a.patch_batch("pods", "status", &patches).await.unwrap();
    assert_eq!(results.len(), patches.len());
    let code = |i: usize| results[i].as_ref().err().and_then(|e| e.code());
    let p0 = results[0].as_ref().unwrap();
    let p3 = results[4].as_ref().unwrap();
    assert_eq!(p0["status"]["phase"], "Running");
    assert_eq!(rv(p0), rv(p3), "written in one transaction");
    assert_eq!(code(1), Some(Code::FailedPrecondition), "{:?}", results[1]);
    assert_eq!(code(2), Some(Code::NotFound), "{:?}", results[2]);
    assert_eq!(code(3), Some(Code::InvalidArgument), "{:?}", results[3]);
    let msg = results[3].as_ref().unwrap_err().to_string();
    assert!(msg.contains("podIP"), "{msg}");
    let again = results[5].as_ref().unwrap();
    assert_eq!(again["status"]["podIP"], "10.0.0.9");
    assert_eq!(again["status"]["phase"], "Running");
    assert!(rv(again) > rv(p0));
    // What was refused is unchanged; a status patch does not touch the spec.
    assert_eq!(a.get("pods", "b3", "p2").await.unwrap(), p2);
    assert_ne!(
        a.get("pods", "b3", "p1").await.unwrap()["status"]["phase"],
        "Running"
    );
    assert_eq!(
        a.get("pods", "b3", "p0").await.unwrap()["spec"]["nodeName"],
        "n1"
    );

    // A node reports only its own pods: n1 may patch p1, not p3 (on n2).
    let n1 = client_of(&c, &["s1"], &node(&c, "n1"));
    let mine = |p: &str| ("b3".to_string(), p.to_string(), running.clone());
    let results = n1
        .patch_batch("pods", "status", &[mine("p1"), mine("p3")])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap()["status"]["phase"], "Running");
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");

    // Only "" and "status" can be patched in a batch, and only where a status exists.
    let err = a
        .patch_batch("pods", "binding", &[mine("p1")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unimplemented), "{err}");
    a.create(
        "configmaps",
        "b3",
        &configmap("b3", "cm", json!({"k": "v"})),
    )
    .await
    .unwrap();
    let err = a
        .patch_batch(
            "configmaps",
            "status",
            &[("b3".into(), "cm".into(), json!({"status": {}}))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let cm = a
        .patch_batch(
            "configmaps",
            "",
            &[("b3".into(), "cm".into(), json!({"data": {"k": "w"}}))],
        )
        .await
        .unwrap();
    assert_eq!(cm[0].as_ref().unwrap()["data"]["k"], "w");
}
