//! Authorization with real certificates: admin, edit, view, no binding, a node identity.

use serde_json::{json, Value};
use tonic::Code;

use crate::util::*;

fn binding(ns: &str, user: &str, role: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

fn role(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "bosun/busybox:latest"}]}})
}

fn allowed<T>(r: &bosun_client::Result<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) if e.code() == Some(Code::PermissionDenied) => false,
        Err(e) => panic!("neither allowed nor denied: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_roles_allow_and_deny_as_kubernetes_does() {
    let c = up();
    let admin_client = admin(&c);
    ready(&admin_client).await;
    for ns in ["web", "other"] {
        admin_client
            .create("namespaces", "", &namespace(ns))
            .await
            .unwrap();
    }
    for (u, r) in [("alice", "admin"), ("bob", "edit"), ("carol", "view")] {
        admin_client
            .create("rolebindings", "web", &binding("web", u, r))
            .await
            .unwrap();
    }
    admin_client.create("secrets", "web", &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "web"}, "stringData": {"k": "v"}})).await.unwrap();
    let alice = client_of(&c, &ALL, &user(&c, "alice", Some("dev")));
    let bob = client_of(&c, &ALL, &user(&c, "bob", None));
    let carol = client_of(&c, &ALL, &user(&c, "carol", None));
    let dave = client_of(&c, &ALL, &user(&c, "dave", None));

    // RBAC is read from a cache that follows the store: wait until the bindings count.
    eventually(
        std::time::Duration::from_secs(10),
        "carol's binding applies",
        || async { carol.list(&query("pods", "web")).await.ok() },
    )
    .await
    .unwrap();

    let cm = |name: &str| configmap("web", name, json!({}));
    // (who, what, allowed)
    let matrix: Vec<(&str, bool, bool)> = vec![
        (
            "carol lists pods",
            allowed(&carol.list(&query("pods", "web")).await),
            true,
        ),
        (
            "carol creates a configmap",
            allowed(&carol.create("configmaps", "web", &cm("c1")).await),
            false,
        ),
        (
            "carol reads a secret",
            allowed(&carol.get("secrets", "web", "s").await),
            false,
        ),
        (
            "carol lists pods elsewhere",
            allowed(&carol.list(&query("pods", "other")).await),
            false,
        ),
        (
            "bob creates a configmap",
            allowed(&bob.create("configmaps", "web", &cm("b1")).await),
            true,
        ),
        (
            "bob reads a secret",
            allowed(&bob.get("secrets", "web", "s").await),
            true,
        ),
        (
            "bob creates a role",
            allowed(&bob.create("roles", "web", &role("web", "r-bob")).await),
            false,
        ),
        (
            "bob deletes a configmap",
            allowed(&bob.delete("configmaps", "web", "b1", None).await),
            true,
        ),
        (
            "alice creates a role",
            allowed(&alice.create("roles", "web", &role("web", "r-alice")).await),
            true,
        ),
        (
            "alice creates a configmap elsewhere",
            allowed(
                &alice
                    .create("configmaps", "other", &configmap("other", "a", json!({})))
                    .await,
            ),
            false,
        ),
        (
            "alice lists nodes",
            allowed(&alice.list(&query("nodes", "")).await),
            false,
        ),
        (
            "dave lists pods",
            allowed(&dave.list(&query("pods", "web")).await),
            false,
        ),
    ];
    for (what, got, want) in &matrix {
        assert_eq!(got, want, "{what}");
    }
    // A denial names the verb, the resource and the user.
    let err = dave
        .list(&query("pods", "web"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dave") && err.contains("list") && err.contains("pods"),
        "{err}"
    );

    // auth can-i, for oneself and (as an administrator) for others.
    let review =
        |verb: &str, resource: &str, ns: &str, user: &str| bosun_api::resources::ReviewRequest {
            verb: verb.into(),
            resource: resource.into(),
            namespace: ns.into(),
            user: user.into(),
            ..Default::default()
        };
    assert!(
        alice
            .review(review("create", "deployments", "web", ""))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !carol
            .review(review("delete", "pods", "web", ""))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        admin_client
            .review(review("get", "secrets", "web", "bob"))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !admin_client
            .review(review("get", "secrets", "web", "carol"))
            .await
            .unwrap()
            .allowed
    );
    let err = carol
        .review(review("get", "secrets", "web", "bob"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(Code::PermissionDenied),
        "impersonation by a non-admin: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_may_only_write_its_own_node_lease_events_and_pods() {
    let c = up();
    let admin_client = admin(&c);
    ready(&admin_client).await;
    admin_client
        .create("pods", "default", &pod("default", "mine", "n1"))
        .await
        .unwrap();
    admin_client
        .create("pods", "default", &pod("default", "theirs", "n2"))
        .await
        .unwrap();
    let n1 = client_of(&c, &ALL, &node(&c, "n1"));

    let node_obj =
        |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    assert!(
        allowed(&n1.create("nodes", "", &node_obj("n1")).await),
        "own Node"
    );
    assert!(
        !allowed(&n1.create("nodes", "", &node_obj("n2")).await),
        "another Node"
    );
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
    };
    assert!(
        allowed(&n1.create("leases", "kube-node-lease", &lease("n1")).await),
        "own Lease"
    );
    assert!(
        !allowed(&n1.create("leases", "kube-node-lease", &lease("n2")).await),
        "another Lease"
    );
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "mine", "namespace": "default"}, "reason": "Started", "type": "Normal"});
    assert!(
        allowed(&n1.create("events", "default", &event).await),
        "events"
    );

    let status = json!({"status": {"phase": "Running"}});
    assert!(
        allowed(&n1.patch("pods", "default", "mine", "status", &status).await),
        "status of its pod"
    );
    assert!(
        !allowed(
            &n1.patch("pods", "default", "theirs", "status", &status)
                .await
        ),
        "status of another node's pod"
    );
    assert!(
        !allowed(
            &n1.patch(
                "pods",
                "default",
                "mine",
                "",
                &json!({"metadata": {"labels": {"x": "y"}}})
            )
            .await
        ),
        "a pod's spec"
    );
    assert!(
        !allowed(
            &n1.create("pods", "default", &pod("default", "new", "n1"))
                .await
        ),
        "creating pods"
    );
    assert!(allowed(&n1.list(&query("pods", "")).await), "reading pods");
    let mine = admin_client.get("pods", "default", "mine").await.unwrap();
    assert_eq!(mine["status"]["phase"], "Running");
    // A pod deleted meanwhile: the node hears that it is gone, not that it is not its own.
    let gone = n1
        .patch("pods", "default", "vanished", "status", &status)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(Code::NotFound), "{gone}");
}
