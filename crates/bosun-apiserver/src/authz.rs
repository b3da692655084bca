//! Who is calling (the client certificate) and whether they may: superusers, the node
//! authorizer, then RBAC over a cache of the stored Role/Binding objects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bosun_api::kinds;
use bosun_pki::PeerInfo;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::rbac::{self, Attributes, Decision, RbacSnapshot, UserInfo};
use crate::store::Store;

/// The group every authenticated caller is in.
pub const AUTHENTICATED: &str = "system:authenticated";

const RBAC_RESOURCES: [&str; 4] = [
    "roles",
    "clusterroles",
    "rolebindings",
    "clusterrolebindings",
];

/// The caller of a request, from its verified client certificate.
///
/// # Errors
/// [`Error::Unauthenticated`] without one.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<UserInfo> {
    let id = req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.identity.clone())
        .ok_or(Error::Unauthenticated)?;
    let mut groups = id.groups;
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.to_string());
    }
    Ok(UserInfo {
        name: id.user,
        groups,
    })
}

/// RBAC decisions over a cache of the RBAC objects, rebuilt when one of them changes.
pub struct Authorizer {
    store: Store,
    dirty: Arc<AtomicBool>,
    snapshot: RwLock<Arc<RbacSnapshot>>,
}

impl Authorizer {
    /// An authorizer reading RBAC objects from `store`.
    pub fn new(store: Store) -> Self {
        Authorizer {
            store,
            dirty: Arc::new(AtomicBool::new(true)),
            snapshot: RwLock::new(Arc::new(RbacSnapshot::default())),
        }
    }

    /// Marks the cache stale whenever an RBAC object changes, until `shutdown`.
    pub async fn track_changes(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sub = self.store.node().state().subscribe();
        let prefixes: Vec<String> = RBAC_RESOURCES
            .iter()
            .filter_map(|r| kinds::by_resource(r).map(|k| k.prefix("")))
            .collect();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = sub.recv() => m,
            };
            match msg {
                Ok(bosun_store::state_machine::WatchMsg::Events(evs)) => {
                    let hit = evs
                        .iter()
                        .any(|e| prefixes.iter().any(|p| e.kv.key.starts_with(p.as_bytes())));
                    if hit {
                        self.dirty.store(true, Ordering::Release);
                    }
                }
                Ok(bosun_store::state_machine::WatchMsg::Reset)
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.dirty.store(true, Ordering::Release)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn load<T: DeserializeOwned>(&self, resource: &str) -> Vec<T> {
        let Some(kind) = kinds::by_resource(resource) else {
            return Vec::new();
        };
        let kvs = match self.store.scan(&kind.prefix(""), None, 0, 0) {
            Ok((kvs, _, _)) => kvs,
            Err(e) => {
                tracing::warn!(error = %e, resource, "reading RBAC objects failed");
                return Vec::new();
            }
        };
        kvs.iter()
            .filter_map(|kv| {
                let stored = self.store.decode(kv).ok()?;
                serde_json::from_value(stored.object).ok()
            })
            .collect()
    }

    fn current(&self) -> Arc<RbacSnapshot> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let snap = Arc::new(RbacSnapshot::new(
                self.load::<Role>("roles"),
                self.load::<ClusterRole>("clusterroles"),
                self.load::<RoleBinding>("rolebindings"),
                self.load::<ClusterRoleBinding>("clusterrolebindings"),
            ));
            if let Ok(mut g) = self.snapshot.write() {
                *g = snap.clone();
            }
            return snap;
        }
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(_) => Arc::new(RbacSnapshot::default()),
        }
    }

    /// Decides a request. `pod_node` is the node a named pod is bound to, for the node
    /// authorizer.
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes, pod_node: Option<&str>) -> Decision {
        if user.groups.iter().any(|g| g == rbac::SUPERUSER_GROUP) {
            return Decision::Allow("superuser".into());
        }
        // The control plane servers themselves: their scheduler and controllers.
        if user.groups.iter().any(|g| g == bosun_pki::SERVERS_GROUP) {
            return Decision::Allow("control plane server".into());
        }
        if let Some(node) = rbac::node_name(user) {
            return rbac::authorize_node(node, attrs, pod_node);
        }
        self.current().authorize(user, attrs)
    }

    /// Like [`Authorizer::decide`], as a result.
    ///
    /// # Errors
    /// [`Error::Forbidden`] naming the verb, the resource and the user.
    pub fn check(&self, user: &UserInfo, attrs: &Attributes, pod_node: Option<&str>) -> Result<()> {
        match self.decide(user, attrs, pod_node) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(why) => {
                tracing::info!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, namespace = %attrs.namespace, "denied");
                Err(Error::Forbidden(why))
            }
        }
    }
}
