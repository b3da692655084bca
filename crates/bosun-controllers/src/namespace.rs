//! The namespace controller: empties a namespace that is being deleted (every object in
//! it, through the API, so pods get their grace period and Services release their
//! addresses), then removes the `kubernetes` finalizer from its spec, which deletes it.

use bosun_api::json::At;
use std::time::Duration;

use bosun_api::kinds::KINDS;
use bosun_client::informer::{null_as_default, Informers};
use bosun_client::{Client, Code, Query};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How often terminating namespaces are revisited.
const TICK: Duration = Duration::from_millis(500);
/// Deletes of one namespace's objects in flight at most.
const DELETES_IN_FLIGHT: usize = 32;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

/// What emptying a namespace reads of each object in it.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Listed {
    #[serde(deserialize_with = "null_as_default")]
    metadata: ListedMeta,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ListedMeta {
    #[serde(deserialize_with = "null_as_default")]
    name: String,
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let namespaces = informers.get("namespaces");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = namespaces.wait_synced() => {}
    }
    tracing::info!("namespace controller started");
    let mut tick = tokio::time::interval(TICK);
    // A pass that outlasts ticks is followed by one tick later, not by the missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        for ns in namespaces.list() {
            if ns.at("/metadata/deletionTimestamp").is_none() {
                continue;
            }
            let name = s(&ns, "/metadata/name");
            match empty(&client, name).await {
                Ok(true) => {
                    let done = client
                        .patch(
                            "namespaces",
                            "",
                            name,
                            "",
                            &json!({"spec": {"finalizers": null}}),
                        )
                        .await;
                    match done {
                        Ok(_) => tracing::info!(namespace = name, "namespace emptied and deleted"),
                        Err(e) if e.code() == Some(Code::NotFound) => {}
                        Err(e) => {
                            tracing::debug!(namespace = name, error = %e, "finalizing failed; retrying")
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e, "emptying failed; retrying")
                }
            }
        }
    }
}

/// Deletes what is left in `ns`; true when nothing is.
async fn empty(client: &Client, ns: &str) -> bosun_client::Result<bool> {
    let mut left = 0;
    for k in KINDS.iter().filter(|k| k.namespaced) {
        let q = Query {
            resource: k.resource.into(),
            namespace: ns.into(),
            limit: 500,
            ..Default::default()
        };
        // Only names and whether deletion began are read: a namespace of ten thousand
        // pods is listed on every tick until it is empty, and decoding each whole was
        // most of the controller's work.
        let items = client.list_all_as::<Listed>(&q).await?.items;
        left += items.len();
        let names: Vec<String> = items
            .into_iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| o.metadata.name)
            .collect();
        // A few deletes in flight, not one at a time: a namespace of thousands of pods
        // otherwise takes a store round trip per pod, in turn.
        let mut outcomes = futures::stream::iter(names)
            .map(|name| async move { client.delete(k.resource, ns, &name, None).await })
            .buffer_unordered(DELETES_IN_FLIGHT);
        let mut failed = None;
        while let Some(r) = outcomes.next().await {
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some(Code::NotFound) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(left == 0)
}
