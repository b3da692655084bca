//! Create, update, apply, list and delete through the resource API: compare-and-swap,
//! validation, allocation, pagination.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tonic::Code;

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn of_two_conflicting_updates_one_wins_and_the_other_gets_a_conflict() {
    let c = up();
    let a = client_of(&c, &["s1"], &c.admin_tls());
    let b = client_of(&c, &["s3"], &c.admin_tls());
    ready(&a).await;
    a.create(
        "configmaps",
        "default",
        &configmap("default", "shared", json!({"v": "0"})),
    )
    .await
    .unwrap();
    let seen_by_a = a.get("configmaps", "default", "shared").await.unwrap();
    let seen_by_b = b.get("configmaps", "default", "shared").await.unwrap();
    assert_eq!(rv(&seen_by_a), rv(&seen_by_b));

    let mut mine = seen_by_a.clone();
    mine["data"]["v"] = json!("a");
    let written = a.update("configmaps", "", &mine).await.unwrap();
    assert!(rv(&written) > rv(&seen_by_a));

    let mut theirs = seen_by_b.clone();
    theirs["data"]["v"] = json!("b");
    let err = b.update("configmaps", "", &theirs).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string().contains("the object has been modified"),
        "{err}"
    );

    // Nothing was silently overwritten.
    let now = b.get("configmaps", "default", "shared").await.unwrap();
    assert_eq!(now["data"]["v"], "a");
    assert_eq!(rv(&now), rv(&written));
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_is_idempotent_and_removes_what_the_manifest_no_longer_says() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "bosun/busybox:latest", "ports": [{"containerPort": 80}]}]}}
        }
    });
    let first = client.apply("default", &manifest).await.unwrap();
    assert_eq!(first.outcome, "created");
    assert_eq!(first.object["metadata"]["generation"], 1);
    // Defaults as Kubernetes sets them.
    assert_eq!(first.object["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        first.object["spec"]["template"]["spec"]["restartPolicy"],
        "Always"
    );
    assert_eq!(
        first.object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );

    let again = client.apply("default", &manifest).await.unwrap();
    assert_eq!(again.outcome, "unchanged");
    assert_eq!(rv(&again.object), rv(&first.object));

    // Someone else adds a label; the manifest drops "tier" and changes replicas.
    client
        .patch(
            "deployments",
            "default",
            "web",
            "",
            &json!({"metadata": {"labels": {"owner": "ops"}}}),
        )
        .await
        .unwrap();
    let mut changed = manifest.clone();
    changed["metadata"]["labels"] = json!({"app": "web"});
    changed["spec"]["replicas"] = json!(3);
    let third = client.apply("default", &changed).await.unwrap();
    assert_eq!(third.outcome, "configured");
    let labels = &third.object["metadata"]["labels"];
    assert_eq!(
        labels.get("tier"),
        None,
        "removed from the manifest: {labels}"
    );
    assert_eq!(labels["owner"], "ops", "set by someone else: kept");
    assert_eq!(third.object["spec"]["replicas"], 3);
    assert_eq!(third.object["metadata"]["generation"], 2);
    assert_eq!(
        client.apply("default", &changed).await.unwrap().outcome,
        "unchanged"
    );
}

/// One invalid manifest per kind, with the field the error must name.
fn invalid_manifests() -> Vec<(Value, &'static str)> {
    let pod_spec = json!({"containers": [{"name": "c", "image": "i"}]});
    vec![
        (
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Not_A_Label"}}),
            "metadata.name",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k"}]}}),
            "spec.taints[0].effect",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
            "spec.containers[0].image",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}}),
            "spec.ports[0].port",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "not-an-ip"}]}]}),
            "subsets[0].addresses[0].ip",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"bad key!": "v"}}),
            "data[bad key!]",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {}}),
            "data[tls.crt]",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"}, "involvedObject": {}}),
            "involvedObject.kind",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"}, "spec": {"replicas": -2, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}}),
            "spec.replicas",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "c"}}, "spec": pod_spec}}}),
            "spec.template.metadata.labels",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}}),
            "spec.selector",
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}),
            "spec.template.spec.restartPolicy",
        ),
        (
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}}),
            "spec.leaseDurationSeconds",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]}),
            "rules[0].verbs",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cr"}, "rules": [{"verbs": ["get"]}]}),
            "rules[0]",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Widget", "name": "x"}, "subjects": [{"kind": "User", "name": "u"}]}),
            "roleRef.kind",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "crb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ""}, "subjects": [{"kind": "User", "name": "u"}]}),
            "roleRef.name",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_manifest_of_every_kind_is_refused_naming_the_field_and_nothing_is_written() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let cases = invalid_manifests();
    assert_eq!(
        cases.len(),
        bosun_api::kinds::KINDS.len(),
        "one case per kind"
    );
    for (m, field) in cases {
        let kind = m["kind"].as_str().unwrap_or("").to_string();
        let err = client.apply("default", &m).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{kind}: {err}");
        assert!(
            err.to_string().contains(field),
            "{kind}: expected {field:?} in: {err}"
        );
        let k = bosun_api::kinds::by_kind(m["apiVersion"].as_str().unwrap_or(""), &kind).unwrap();
        let name = m["metadata"]["name"].as_str().unwrap_or("");
        let got = client.get(k.resource, "default", name).await.unwrap_err();
        assert_eq!(
            got.code(),
            Some(Code::NotFound),
            "{kind} was written: {got}"
        );
    }
    // A typo'd field is not silently dropped, and every problem is reported at once.
    let typo = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c", "imagee": "x", "ports": [{"containerPort": 70000}]}]}});
    let err = client
        .apply("default", &typo)
        .await
        .unwrap_err()
        .to_string();
    for f in [
        "spec.containers[0].imagee",
        "metadata.name",
        "spec.containers[0].image",
        "containerPort",
    ] {
        assert!(err.contains(f), "{f} missing from: {err}");
    }
    // A Service's requested values are judged with the rest: an IP outside the service
    // range, a node port outside its range and a bad label in one refusal, on create and
    // on update.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ranges", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "192.168.0.5", "selector": {"app": "-bad-"},
            "ports": [{"port": 80, "nodePort": 80}]}});
    let err = client
        .create("services", "default", &svc)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    for f in [
        "spec.clusterIP: Invalid value: \"192.168.0.5\": provided IP is not in the valid range",
        "spec.ports[0].nodePort: Invalid value: 80",
        "spec.selector",
    ] {
        assert!(err.to_string().contains(f), "{f} missing from: {err}");
    }
    let ok = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ranges", "namespace": "default"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let stored = client.create("services", "default", &ok).await.unwrap();
    let mut upd = stored.clone();
    upd["spec"]["ports"][0]["nodePort"] = json!(80);
    upd["spec"]["selector"] = json!({"app": "-bad-"});
    let err = client.update("services", "", &upd).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    for f in ["spec.ports[0].nodePort: Invalid value: 80", "spec.selector"] {
        assert!(err.to_string().contains(f), "{f} missing from: {err}");
    }
    let now = client.get("services", "default", "ranges").await.unwrap();
    assert_eq!(rv(&now), rv(&stored), "a refused update was written");
    // Not JSON at all, an unknown kind, a missing namespace.
    let err = client
        .apply(
            "default",
            &json!({"apiVersion": "v9", "kind": "Widget", "metadata": {"name": "w"}}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Widget"), "{err}");
    let err = client
        .create(
            "configmaps",
            "nowhere",
            &configmap("nowhere", "x", json!({})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(
        err.to_string().contains("namespaces \"nowhere\" not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_services_never_share_an_ip_or_node_port_and_delete_releases_them() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let cl = client.clone();
        tasks.push(tokio::spawn(async move {
            let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}"), "namespace": "default"},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}});
            cl.create("services", "default", &svc).await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        let s = t.await.unwrap().unwrap();
        assert!(
            ips.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()),
            "duplicate IP"
        );
        for p in s["spec"]["ports"].as_array().unwrap() {
            let np = p["nodePort"].as_i64().unwrap();
            assert!((30000..=32767).contains(&np));
            assert!(ports.insert(np), "duplicate node port {np}");
        }
    }
    assert_eq!(ips.len(), 24);
    assert_eq!(ports.len(), 48);
    // A user-chosen port that is taken is refused, naming it.
    let taken = *ports.iter().next().unwrap();
    let clash = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clash", "namespace": "default"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]}});
    let err = client
        .create("services", "default", &clash)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    // Deleting releases: the allocation keys are gone from the store.
    for i in 0..24 {
        client
            .delete("services", "default", &format!("s{i}"), None)
            .await
            .unwrap();
    }
    let mut kv = c.kv("s1").unwrap();
    let left = kv
        .range(bosun_api::etcd::RangeRequest {
            key: b"/registry/allocations/".to_vec(),
            range_end: b"/registry/allocations0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(left, 0, "allocations left after deleting every service");
    // ... so the port can be taken again.
    client.create("services", "default", &clash).await.unwrap();
}

/// Creates every service at once (released together by a barrier, spread over the servers)
/// and returns each outcome.
async fn create_at_once(c: &Cluster, services: Vec<Value>) -> Vec<bosun_client::Result<Value>> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(services.len()));
    let mut tasks = Vec::new();
    for (i, svc) in services.into_iter().enumerate() {
        let cl = client_of(c, &[ALL[i % ALL.len()]], &c.admin_tls());
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            cl.create("services", "default", &svc).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn services_racing_for_the_same_node_port_or_the_last_free_ip_get_it_exactly_once() {
    // Random picks from the default ranges rarely collide; here every racer wants the same
    // value, so only the store's "this allocation key is absent" guard keeps them apart.
    let c = match Cluster::up(bin(), 3, &["--service-cidr", "10.96.0.0/28"]) {
        Ok(c) => c,
        Err(e) => panic!("starting cluster: {e}"),
    };
    let client = admin(&c);
    ready(&client).await;
    let svc = |name: &str, spec: Value| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    // Six creates asking for the same node port: one gets it, the others are told it is taken.
    let racers = (0..6)
        .map(|i| {
            svc(
                &format!("np{i}"),
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30555}]}),
            )
        })
        .collect();
    let outcomes = create_at_once(&c, racers).await;
    let won: Vec<&Value> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "node port 30555 given {} times", won.len());
    for err in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains("already allocated"), "{err}");
    }
    // 10.96.0.2 to .14 are allocatable (13 addresses); the winner above holds one. Take
    // all but one more, then six creates race for the last one: each must pick it.
    for i in 0..11 {
        client
            .create(
                "services",
                "default",
                &svc(&format!("fill{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await
            .unwrap();
    }
    let racers = (0..6)
        .map(|i| svc(&format!("ip{i}"), json!({"ports": [{"port": 80}]})))
        .collect();
    let outcomes = create_at_once(&c, racers).await;
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(won, 1, "the last free service IP was given {won} times");
    for err in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    }
    let all = client
        .list_all(&query("services", "default"))
        .await
        .unwrap();
    let ips: BTreeSet<&str> = all
        .items
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .collect();
    assert_eq!(all.items.len(), 13, "{:?}", names(&all.items));
    assert_eq!(ips.len(), 13, "two services share an IP: {ips:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_with_continue_tokens_and_filter_by_label_and_field() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    for i in 0..25 {
        let mut cm = configmap(
            "default",
            &format!("cm-{i:02}"),
            json!({"i": i.to_string()}),
        );
        cm["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        client.create("configmaps", "default", &cm).await.unwrap();
    }
    let mut q = query("configmaps", "default");
    q.limit = 10;
    let mut seen = Vec::new();
    let first = client.list(&q).await.unwrap();
    assert_eq!(first.items.len(), 10);
    seen.extend(names(&first.items));
    // The next pages come from another server, at the first page's revision.
    let other = client_of(&c, &["s3"], &c.admin_tls());
    q.continue_token = first.continue_token.clone();
    loop {
        let page = other.list(&q).await.unwrap();
        assert_eq!(page.resource_version, first.resource_version);
        seen.extend(names(&page.items));
        if page.continue_token.is_empty() {
            break;
        }
        q.continue_token = page.continue_token;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(seen, expected);

    let mut q = query("configmaps", "default");
    q.labels = "parity=even".into();
    assert_eq!(client.list_all(&q).await.unwrap().items.len(), 13);
    q.labels = "parity in (odd),parity!=even".into();
    assert_eq!(client.list_all(&q).await.unwrap().items.len(), 12);
    q.labels = String::new();
    q.fields = "metadata.name=cm-07".into();
    assert_eq!(
        names(&client.list_all(&q).await.unwrap().items),
        vec!["cm-07"]
    );
    q.fields = String::new();
    q.labels = "parity in (".into();
    let err = client.list(&q).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_without_a_selector_gives_each_object_as_get_does_whatever_its_stored_layout() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let mut made = configmap("default", "a-made", json!({"k": "v"}));
    made["metadata"]["labels"] = json!({"set": "yes"});
    client.create("configmaps", "default", &made).await.unwrap();
    // Written through the etcd API as other programs lay JSON out: members out of order
    // (as Go writes them), white space, escapes. A list sends what the API server wrote
    // as stored; these it must decode, and give the same objects.
    let mut kv = c.kv("s1").unwrap();
    let written = [
        (
            "b-go",
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"b-go","namespace":"default","uid":"u-b","labels":{"set":"yes"}},"data":{"z":"1","a":"2"}}"#,
        ),
        (
            "c-spaced",
            r#"{ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "labels": {"set": "yes"}, "name": "c-spaced", "namespace": "default", "uid": "u-c" }, "data": {"s": "\u00e9\/"} }"#,
        ),
        (
            "d-sorted",
            r#"{"apiVersion":"v1","data":{"n":"x"},"kind":"ConfigMap","metadata":{"labels":{"set":"yes"},"name":"d-sorted","namespace":"default","uid":"u-d"}}"#,
        ),
    ];
    for (name, json) in written {
        let r = kv
            .put(bosun_api::etcd::PutRequest {
                key: format!("/registry/configmaps/default/{name}").into_bytes(),
                value: json.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.into_inner().header.is_some());
    }
    let mut q = query("configmaps", "default");
    let all = client.list_all(&q).await.unwrap().items;
    q.labels = "set=yes".into();
    let selected = client.list_all(&q).await.unwrap().items;
    assert_eq!(
        names(&all),
        ["a-made", "b-go", "c-spaced", "d-sorted"],
        "{all:?}"
    );
    assert_eq!(all, selected);
    for obj in &all {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let got = client.get("configmaps", "default", name).await.unwrap();
        assert_eq!(obj, &got, "{name}");
        assert!(rv(obj) > 0, "{name} has no resource version: {obj}");
    }
    assert_eq!(all[2]["data"]["s"], "\u{e9}/");
    // A record that is not JSON fails the list, naming it, with or without a selector, as
    // it fails a get. One that holds a number no decoder holds (only a raw etcd write
    // stores one) fails a get and a selected list the same way; a list without a selector
    // sends it as stored, and the client's decoding fails (json::Compact::parse).
    let broken: [(&str, &[u8]); 2] = [
        ("e-broken", br#"{"apiVersion":"v1","kind":"Conf"#),
        (
            "f-huge",
            br#"{"apiVersion":"v1","data":{"n":1e400},"kind":"ConfigMap","metadata":{"labels":{"set":"yes"},"name":"f-huge","namespace":"default"}}"#,
        ),
    ];
    for (name, value) in broken {
        let key = format!("/registry/configmaps/default/{name}").into_bytes();
        kv.put(bosun_api::etcd::PutRequest {
            key: key.clone(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
        for labels in ["", "set=yes"] {
            q.labels = labels.into();
            let err = client.list_all(&q).await.unwrap_err();
            if name == "f-huge" && labels.is_empty() {
                assert!(err.to_string().contains("out of range"), "{err}");
                continue;
            }
            assert_eq!(err.code(), Some(Code::DataLoss), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = client.get("configmaps", "default", name).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::DataLoss), "{name}: {err}");
        kv.delete_range(bosun_api::etcd::DeleteRangeRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    q.labels = String::new();
    assert_eq!(client.list_all(&q).await.unwrap().items.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_honours_preconditions_finalizers_and_grace_periods() {
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let mut cm = configmap("default", "held", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let created = client.create("configmaps", "default", &cm).await.unwrap();

    // A stale precondition refuses.
    let err = bosun_api::resources::DeleteRequest {
        target: Some(bosun_api::resources::Target {
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: "held".into(),
            subresource: String::new(),
        }),
        precondition_resource_version: (rv(&created) - 1).to_string(),
        ..Default::default()
    };
    let mut raw = bosun_api::resources::resources_client::ResourcesClient::new(
        c.channel_as("s1", &c.admin_tls()).unwrap(),
    );
    let status = raw.delete(err).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // With a finalizer the object is only marked ...
    let marked = client
        .delete("configmaps", "default", "held", None)
        .await
        .unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert!(client.get("configmaps", "default", "held").await.is_ok());
    // ... and goes when its last finalizer is removed.
    client
        .patch(
            "configmaps",
            "default",
            "held",
            "",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await
        .unwrap();
    let gone = client
        .get("configmaps", "default", "held")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(Code::NotFound));

    // A pod bound to a node is left to its agent for its grace period; grace 0 removes it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "bosun/busybox:latest"}]}});
    client.create("pods", "default", &pod).await.unwrap();
    let marked = client.delete("pods", "default", "p", None).await.unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(client.get("pods", "default", "p").await.is_ok());
    client
        .delete("pods", "default", "p", Some(0))
        .await
        .unwrap();
    assert_eq!(
        client.get("pods", "default", "p").await.unwrap_err().code(),
        Some(Code::NotFound)
    );

    // Deleting a namespace deletes what is in it.
    client
        .create("namespaces", "", &namespace("doomed"))
        .await
        .unwrap();
    client
        .create("configmaps", "doomed", &configmap("doomed", "x", json!({})))
        .await
        .unwrap();
    let marked = client
        .delete("namespaces", "", "doomed", None)
        .await
        .unwrap();
    // Terminating first, as in Kubernetes: nothing new may be created in it ...
    assert_eq!(marked["status"]["phase"], "Terminating", "{marked}");
    let err = client
        .create(
            "configmaps",
            "doomed",
            &configmap("doomed", "late", json!({})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert!(err.to_string().contains("being terminated"), "{err}");
    // ... then the namespace controller empties it and it goes.
    eventually(
        Duration::from_secs(30),
        "namespace emptied and deleted",
        || async {
            let ns_gone =
                client.get("namespaces", "", "doomed").await.err()?.code() == Some(Code::NotFound);
            let cm_gone =
                client.get("configmaps", "doomed", "x").await.err()?.code() == Some(Code::NotFound);
            (ns_gone && cm_gone).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_names_server_fields_and_the_size_limit() {
    // A 64 KiB object limit: objects near the limit stay small and quick to replicate.
    let c = match Cluster::up(bin(), 3, &["--max-value-bytes", "65536"]) {
        Ok(c) => c,
        Err(e) => panic!("starting cluster: {e}"),
    };
    let client = admin(&c);
    ready(&client).await;
    let mut cm = configmap("default", "", json!({}));
    cm["metadata"] = json!({"generateName": "gen-", "namespace": "default", "uid": "forged", "resourceVersion": "999999"});
    let a = client.create("configmaps", "default", &cm).await.unwrap();
    let b = client.create("configmaps", "default", &cm).await.unwrap();
    let (na, nb) = (
        a["metadata"]["name"].as_str().unwrap(),
        b["metadata"]["name"].as_str().unwrap(),
    );
    assert!(na.starts_with("gen-") && na.len() == 9, "{na}");
    assert_ne!(na, nb);
    assert_ne!(a["metadata"]["uid"], "forged");
    assert_eq!(a["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(a["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // Too large: refused with the limit named, nothing written.
    let big = configmap("default", "big", json!({"blob": "x".repeat(100_000)}));
    let err = client
        .create("configmaps", "default", &big)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the object is too large") && err.to_string().contains("65536"),
        "{err}"
    );
    assert_eq!(
        client
            .get("configmaps", "default", "big")
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );
    // Each request below is under the limit; what would be stored is not. The limit holds
    // on the stored object: refused, naming the object and the sizes, nothing written.
    let too_large = |err: &bosun_client::Error, name: &str| {
        let text = err.to_string();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(
            text.contains(&format!("configmaps \"{name}\" is too large to store"))
                && text.contains("the limit is 65536"),
            "{err}"
        );
    };
    let grow = configmap("default", "grow", json!({"a": "x".repeat(40_000)}));
    let stored = client.create("configmaps", "default", &grow).await.unwrap();
    let err = client
        .patch(
            "configmaps",
            "default",
            "grow",
            "",
            &json!({"data": {"b": "y".repeat(30_000)}}),
        )
        .await
        .unwrap_err();
    too_large(&err, "grow");
    // Apply records the manifest in an annotation, doubling the object: refused on the
    // update path (the object exists) and on the create path.
    let err = client.apply("default", &grow).await.unwrap_err();
    too_large(&err, "grow");
    let now = client.get("configmaps", "default", "grow").await.unwrap();
    assert_eq!(rv(&now), rv(&stored), "a refused write changed the object");
    assert_eq!(now["data"], stored["data"]);
    let fresh = configmap("default", "fresh", json!({"a": "x".repeat(40_000)}));
    let err = client.apply("default", &fresh).await.unwrap_err();
    too_large(&err, "fresh");
    assert_eq!(
        client
            .get("configmaps", "default", "fresh")
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );
    client
        .delete("configmaps", "default", "grow", None)
        .await
        .unwrap();
    // A status written with the object is ignored; the status subresource sets it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "bosun/busybox:1.36"}]}, "status": {"phase": "Running"}});
    let p = client.create("pods", "default", &pod).await.unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let mut upd = p.clone();
    upd["status"]["phase"] = json!("Running");
    let same = client.update("pods", "", &upd).await.unwrap();
    assert_eq!(
        same["status"]["phase"], "Pending",
        "main update changed the status"
    );
    let st = client.update("pods", "status", &upd).await.unwrap();
    assert_eq!(st["status"]["phase"], "Running");
    // A pod's spec is immutable but for the image.
    let mut img = st.clone();
    img["spec"]["containers"][0]["image"] = json!("bosun/busybox:1.37");
    client.update("pods", "", &img).await.unwrap();
    let mut bad = img.clone();
    bad["metadata"]["resourceVersion"] = json!("");
    bad["spec"]["restartPolicy"] = json!("Never");
    let err = client.update("pods", "", &bad).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_owner_propagates_to_its_dependents_as_asked() {
    // The pods name the ReplicaSet as a (non-controlling) owner, so the ReplicaSet
    // controller leaves them alone; replicas 0: it creates none of its own.
    let c = up();
    let client = admin(&c);
    ready(&client).await;
    let rs = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"rs": name}},
            "template": {"metadata": {"labels": {"rs": name}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}})
    };
    let owned_pod = |name: &str, owner: &Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": false}]},
        "spec": {"containers": [{"name": "c", "image": "i:1"}]}})
    };
    for (policy, survives) in [
        ("Background", false),
        ("Foreground", false),
        ("Orphan", true),
    ] {
        let name = policy.to_lowercase();
        let owner = client
            .create("replicasets", "default", &rs(&name))
            .await
            .unwrap();
        for i in 0..3 {
            client
                .create(
                    "pods",
                    "default",
                    &owned_pod(&format!("{name}-{i}"), &owner),
                )
                .await
                .unwrap();
        }
        let unrelated = client
            .create(
                "pods",
                "default",
                &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-free"), "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}}),
            )
            .await
            .unwrap();
        client
            .delete_with(bosun_api::resources::DeleteRequest {
                target: Some(bosun_api::resources::Target {
                    resource: "replicasets".into(),
                    namespace: "default".into(),
                    name: name.clone(),
                    subresource: String::new(),
                }),
                propagation_policy: policy.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            client
                .get("replicasets", "default", &name)
                .await
                .unwrap_err()
                .code(),
            Some(Code::NotFound)
        );
        for i in 0..3 {
            let pod = client.get("pods", "default", &format!("{name}-{i}")).await;
            assert_eq!(pod.is_ok(), survives, "{policy}: pod {i}");
            if let Ok(p) = pod {
                assert!(
                    p["metadata"].get("ownerReferences").is_none(),
                    "{policy}: still owned: {p}"
                );
            }
        }
        assert!(client
            .get(
                "pods",
                "default",
                unrelated["metadata"]["name"].as_str().unwrap()
            )
            .await
            .is_ok());
    }
    let err = client
        .delete_with(bosun_api::resources::DeleteRequest {
            target: Some(bosun_api::resources::Target {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "orphan-0".into(),
                subresource: String::new(),
            }),
            propagation_policy: "Sideways".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Sideways"), "{err}");
}
