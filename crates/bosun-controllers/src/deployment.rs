//! The Deployment controller: one ReplicaSet per pod template revision, rolled from old to
//! new as the strategy says (RollingUpdate within maxSurge / maxUnavailable, or Recreate),
//! with revision history, pausing, conditions, the progress deadline and — bosun's
//! addition, as Nomad and Swarm have it — automatic rollback to the last good revision
//! when a rollout misses its deadline and the Deployment asks for it with the annotation
//! `bosun.io/auto-rollback: "true"`.

use bosun_api::json::At;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Changes, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::replicaset::controller_uid;

/// Periodic resync (progress deadlines are checked on it).
const RESYNC: Duration = Duration::from_secs(2);
/// The annotation holding a ReplicaSet's revision, as Kubernetes names it.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The annotation that asks for automatic rollback.
pub const AUTO_ROLLBACK: &str = "bosun.io/auto-rollback";
/// The annotation the controller puts on a ReplicaSet once its rollout completed (all
/// replicas updated and available): only such a revision is a target of automatic
/// rollback, as only a stable job version is in Nomad.
pub const STABLE: &str = "bosun.io/stable";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.at(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs.at("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rv(o: &Value) -> i64 {
    s(o, "/metadata/resourceVersion").parse().unwrap_or(0)
}

/// The template without the hash label: what two revisions are compared by.
fn bare_template(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    t
}

/// A short, stable hash of a pod template (FNV-1a over its JSON), as a label value.
pub fn template_hash(template: &Value) -> String {
    let text = serde_json::to_string(&bare_template(template)).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Kubernetes' alphabet for generated names: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = u64::from(h);
    for _ in 0..10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
        if n == 0 {
            n = u64::from(h.rotate_left(7));
        }
    }
    out
}

/// `maxSurge` / `maxUnavailable`: an integer, or a percentage of `replicas` rounded up
/// (surge) or down (unavailable).
fn scaled(v: Option<&Value>, replicas: i64, round_up: bool, default_pct: i64) -> i64 {
    let pct = |p: i64| {
        if round_up {
            (replicas * p + 99) / 100
        } else {
            replicas * p / 100
        }
    };
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(t)) => t
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .map_or(pct(default_pct), pct),
        _ => pct(default_pct),
    }
}

/// What one pass decided for one Deployment.
#[derive(Debug, Default)]
struct Plan {
    /// Revision (store) the next pass must wait for in the ReplicaSet cache.
    wrote: Option<i64>,
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let deps = informers.get("deployments");
    let sets = informers.get("replicasets");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { deps.wait_synced().await; sets.wait_synced().await } => {}
    }
    tracing::info!("deployment controller started");
    let mut waiting: HashMap<String, i64> = HashMap::new();
    let mut changes = Changes::new(vec![deps.subscribe(), sets.subscribe()]);
    loop {
        for d in deps.list() {
            if cancel.is_cancelled() {
                break;
            }
            let uid = s(&d, "/metadata/uid").to_string();
            if waiting.get(&uid).is_some_and(|r| sets.revision() < *r) {
                continue;
            }
            let mine = &sets.owned_by(&uid)[..];
            match reconcile(&client, &d, mine).await {
                Ok(plan) => match plan.wrote {
                    Some(r) => {
                        waiting.insert(uid, r);
                    }
                    None => {
                        waiting.remove(&uid);
                    }
                },
                Err(e) => {
                    tracing::warn!(deployment = %format!("{}/{}", s(&d, "/metadata/namespace"), s(&d, "/metadata/name")), error = %e, "reconcile failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next_or(RESYNC) => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
        }
    }
}

async fn reconcile(
    client: &Client,
    d: &Value,
    candidates: &[Arc<Value>],
) -> bosun_client::Result<Plan> {
    let mut plan = Plan::default();
    if d.at("/metadata/deletionTimestamp").is_some() {
        return Ok(plan);
    }
    let ns = s(d, "/metadata/namespace");
    let name = s(d, "/metadata/name");
    let uid = s(d, "/metadata/uid");
    let replicas = d.at("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let template = d.at("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let mut owned: Vec<Arc<Value>> = candidates
        .iter()
        .filter(|r| s(r, "/metadata/namespace") == ns && controller_uid(r) == Some(uid))
        .cloned()
        .collect();
    owned.sort_by_key(|r| revision(r));
    let max_rev = owned.iter().map(|r| revision(r)).max().unwrap_or(0);
    let bare = bare_template(&template);
    let new_rs = owned
        .iter()
        .find(|r| r.at("/spec/template").map(bare_template).as_ref() == Some(&bare))
        .cloned();
    let paused = d.at("/spec/paused").and_then(Value::as_bool) == Some(true);

    let Some(new_rs) = new_rs else {
        if paused {
            // The new template waits: report the paused state (no pod is updated yet).
            status(client, d, &json!({}), &owned, replicas).await?;
            return Ok(plan);
        }
        // A new revision: its ReplicaSet starts at 0 (RollingUpdate scales it below) or,
        // for the very first revision, at full size.
        let start = if owned.is_empty() { replicas } else { 0 };
        let mut t = template.clone();
        if let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(HASH_LABEL.into(), json!(hash));
            }
        }
        let mut selector = d.at("/spec/selector").cloned().unwrap_or(json!({}));
        if let Some(sel) = selector.as_object_mut() {
            let ml = sel.entry("matchLabels").or_insert_with(|| json!({}));
            if let Some(ml) = ml.as_object_mut() {
                ml.insert(HASH_LABEL.into(), json!(hash));
            }
        }
        let labels = t.at("/metadata/labels").cloned().unwrap_or(json!({}));
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                "annotations": {REVISION: (max_rev + 1).to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                    "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": start, "selector": selector, "template": t,
                "minReadySeconds": d.at("/spec/minReadySeconds").cloned().unwrap_or(json!(0))}});
        let created = client.create("replicasets", ns, &rs).await?;
        plan.wrote = Some(rv(&created));
        mark_progress(
            client,
            d,
            "NewReplicaSetCreated",
            &format!(
                "Created new replica set {:?}",
                s(&created, "/metadata/name")
            ),
        )
        .await?;
        return Ok(plan);
    };

    // Rolling back to an older template makes its ReplicaSet the newest revision again.
    if revision(&new_rs) < max_rev && !paused {
        let patched = client
            .patch(
                "replicasets",
                ns,
                s(&new_rs, "/metadata/name"),
                "",
                &json!({"metadata": {"annotations": {REVISION: (max_rev + 1).to_string()}}}),
            )
            .await?;
        plan.wrote = Some(rv(&patched));
        return Ok(plan);
    }
    let old: Vec<&Arc<Value>> = owned
        .iter()
        .filter(|r| s(r, "/metadata/uid") != s(&new_rs, "/metadata/uid"))
        .collect();
    let strategy = s(d, "/spec/strategy/type");
    let new_name = s(&new_rs, "/metadata/name").to_string();
    let new_replicas = i(&new_rs, "/spec/replicas");
    let scale = |rs: &str, n: i64| (rs.to_string(), n);
    let mut changes: Vec<(String, i64)> = Vec::new();
    if !paused {
        if strategy == "Recreate" {
            let old_pods: i64 = old
                .iter()
                .map(|r| i(r, "/status/replicas").max(i(r, "/spec/replicas")))
                .sum();
            for r in &old {
                if i(r, "/spec/replicas") != 0 {
                    changes.push(scale(s(r, "/metadata/name"), 0));
                }
            }
            if old_pods == 0 && new_replicas != replicas {
                changes.push(scale(&new_name, replicas));
            }
        } else {
            let surge = scaled(
                d.at("/spec/strategy/rollingUpdate/maxSurge"),
                replicas,
                true,
                25,
            );
            let mut unavailable = scaled(
                d.at("/spec/strategy/rollingUpdate/maxUnavailable"),
                replicas,
                false,
                25,
            );
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let total: i64 = owned.iter().map(|r| i(r, "/spec/replicas")).sum();
            // Pods that exist (created, not yet gone) count against the surge too.
            let existing: i64 = owned
                .iter()
                .map(|r| i(r, "/status/replicas").max(i(r, "/spec/replicas")))
                .sum();
            if new_replicas > replicas {
                changes.push(scale(&new_name, replicas));
            } else if new_replicas < replicas {
                let room = replicas + surge - total.max(existing);
                if room > 0 {
                    changes.push(scale(
                        &new_name,
                        new_replicas + room.min(replicas - new_replicas),
                    ));
                }
            }
            // Scale old ones down while enough pods stay available — judged only on
            // ReplicaSet statuses that are current (their controller has acted on their
            // latest spec and counted the result): a stale count would remove too many.
            let settled = owned.iter().all(|r| {
                i(r, "/status/observedGeneration") >= i(r, "/metadata/generation")
                    && i(r, "/status/replicas") == i(r, "/spec/replicas")
            });
            let available: i64 = if settled {
                owned
                    .iter()
                    .map(|r| i(r, "/status/availableReplicas"))
                    .sum()
            } else {
                0
            };
            let mut removable = available - (replicas - unavailable);
            // Old ReplicaSets with no available pods can go at once: they serve nothing.
            for r in &old {
                let want = i(r, "/spec/replicas");
                if want == 0 {
                    continue;
                }
                let avail = i(r, "/status/availableReplicas");
                let unhealthy = if settled { (want - avail).max(0) } else { 0 };
                let mut cut = unhealthy.min(want);
                let extra = (removable.max(0)).min(want - cut);
                cut += extra;
                removable -= extra;
                if cut > 0 {
                    changes.push(scale(s(r, "/metadata/name"), want - cut));
                }
            }
        }
    }
    for (rs, n) in &changes {
        let p = client
            .patch("replicasets", ns, rs, "", &json!({"spec": {"replicas": n}}))
            .await?;
        plan.wrote = Some(plan.wrote.unwrap_or(0).max(rv(&p)));
    }
    // History: keep revisionHistoryLimit old ReplicaSets that are scaled to zero.
    let limit = d
        .at("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let idle: Vec<&&Arc<Value>> = old
        .iter()
        .filter(|r| i(r, "/spec/replicas") == 0 && i(r, "/status/replicas") == 0)
        .collect();
    if idle.len() > limit {
        for r in idle.iter().take(idle.len() - limit) {
            match client
                .delete("replicasets", ns, s(r, "/metadata/name"), None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if plan.wrote.is_none() {
        status(client, d, &new_rs, &owned, replicas).await?;
    }
    Ok(plan)
}

async fn mark_progress(
    client: &Client,
    d: &Value,
    reason: &str,
    message: &str,
) -> bosun_client::Result<()> {
    let now = crate::now();
    let mut conds = conditions(d);
    set_condition(
        &mut conds,
        "Progressing",
        "True",
        reason,
        message,
        &now,
        true,
    );
    client
        .patch(
            "deployments",
            s(d, "/metadata/namespace"),
            s(d, "/metadata/name"),
            "status",
            &json!({"status": {"conditions": conds}}),
        )
        .await
        .map(|_| ())
}

fn conditions(d: &Value) -> Vec<Value> {
    d.at("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Sets a condition; `progress` refreshes lastUpdateTime even when nothing else changed.
fn set_condition(
    conds: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    progress: bool,
) {
    match conds.iter_mut().find(|c| s(c, "/type") == kind) {
        Some(c) => {
            let changed = s(c, "/status") != status;
            if changed {
                c["lastTransitionTime"] = json!(now);
            }
            if changed || progress || s(c, "/reason") != reason {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(
            json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}),
        ),
    }
}

async fn status(
    client: &Client,
    d: &Value,
    new_rs: &Value,
    owned: &[Arc<Value>],
    replicas: i64,
) -> bosun_client::Result<()> {
    let sum = |p: &str| owned.iter().map(|r| i(r, p)).sum::<i64>();
    let total = sum("/status/replicas");
    let ready = sum("/status/readyReplicas");
    let available = sum("/status/availableReplicas");
    let updated = i(new_rs, "/status/replicas");
    let updated_available = i(new_rs, "/status/availableReplicas");
    let surge_free_unavailable = scaled(
        d.at("/spec/strategy/rollingUpdate/maxUnavailable"),
        replicas,
        false,
        25,
    );
    let now = crate::now();
    let mut conds = conditions(d);
    let is_available = available >= replicas - surge_free_unavailable;
    set_condition(
        &mut conds,
        "Available",
        if is_available { "True" } else { "False" },
        if is_available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if is_available {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &now,
        false,
    );
    let complete = updated == replicas && updated_available == replicas && total == replicas;
    let name = s(new_rs, "/metadata/name");
    let old_status = d.at("/status").cloned().unwrap_or(json!({}));
    let progressed = i(&old_status, "/updatedReplicas") != updated
        || i(&old_status, "/availableReplicas") != available;
    let paused = d.at("/spec/paused").and_then(Value::as_bool) == Some(true);
    let deadline = d
        .at("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    let progressing = conds
        .iter()
        .find(|c| s(c, "/type") == "Progressing")
        .cloned();
    let mut exceeded = false;
    if paused {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            &now,
            false,
        );
    } else if complete {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {name:?} has successfully progressed."),
            &now,
            false,
        );
    } else if progressed || progressing.is_none() {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet {name:?} is progressing."),
            &now,
            true,
        );
    } else if let Some(p) = &progressing {
        let last = s(p, "/lastUpdateTime").parse::<jiff::Timestamp>().ok();
        let late =
            last.is_some_and(|t| jiff::Timestamp::now().duration_since(t).as_secs() > deadline);
        if late && s(p, "/reason") != "ProgressDeadlineExceeded" {
            set_condition(
                &mut conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet {name:?} has timed out progressing."),
                &now,
                false,
            );
            exceeded = true;
        }
    }
    let new_status = json!({
        "observedGeneration": d.at("/metadata/generation").cloned().unwrap_or(json!(0)),
        "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (replicas - available).max(0),
        "conditions": conds,
    });
    let same = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "conditions",
    ]
    .iter()
    .all(|k| {
        old_status.get(*k).unwrap_or(&Value::Null) == new_status.get(*k).unwrap_or(&Value::Null)
    });
    if !same {
        client
            .patch(
                "deployments",
                s(d, "/metadata/namespace"),
                s(d, "/metadata/name"),
                "status",
                &json!({"status": new_status}),
            )
            .await?;
    }
    // A revision that ran all its replicas is stable: a rollback target. One scaled to
    // zero ran nothing and proves nothing. A failed mark is retried on the next pass and
    // holds up nothing else.
    if complete && replicas > 0 && !name.is_empty() && !is_stable(new_rs) {
        let marked = client
            .patch(
                "replicasets",
                s(new_rs, "/metadata/namespace"),
                name,
                "",
                &json!({"metadata": {"annotations": {STABLE: "true"}}}),
            )
            .await;
        if let Err(e) = marked {
            tracing::warn!(replicaset = name, error = %e, "marking the revision stable failed; retrying");
        }
    }
    // Retried on every pass while the rollout that timed out is still the current one
    // (a failed attempt is not lost); once rolled back, the new ReplicaSet is another.
    let timed_out_here = exceeded
        || conds.iter().any(|c| {
            s(c, "/type") == "Progressing"
                && s(c, "/reason") == "ProgressDeadlineExceeded"
                && s(c, "/message").contains(&format!("{name:?}"))
        });
    if timed_out_here
        && d.at("/metadata/annotations")
            .and_then(|a| a.get(AUTO_ROLLBACK))
            .and_then(Value::as_str)
            == Some("true")
    {
        rollback(client, d, owned, new_rs, exceeded).await?;
    }
    Ok(())
}

fn is_stable(rs: &Value) -> bool {
    rs.at("/metadata/annotations")
        .and_then(|a| a.get(STABLE))
        .and_then(Value::as_str)
        == Some("true")
}

/// The revision to roll back to when `failed` missed its deadline: the newest other one
/// whose rollout once completed. A revision that never did is no target, and one that did
/// is not rolled back from (it is slow now, not bad): so a rollback that is itself slow to
/// finish never swings back to the revision that failed, nor between two good ones.
fn rollback_target<'a>(owned: &'a [Arc<Value>], failed: &Value) -> Option<&'a Arc<Value>> {
    if is_stable(failed) {
        return None;
    }
    owned
        .iter()
        .filter(|r| s(r, "/metadata/uid") != s(failed, "/metadata/uid") && is_stable(r))
        .max_by_key(|r| revision(r))
}

/// Puts the template of the newest older revision that was fully available back in place.
/// `announce`: the deadline was found exceeded in this pass (so that a Deployment with no
/// target is logged once, not on every pass).
async fn rollback(
    client: &Client,
    d: &Value,
    owned: &[Arc<Value>],
    failed: &Value,
    announce: bool,
) -> bosun_client::Result<()> {
    let Some(good) = rollback_target(owned, failed) else {
        if announce {
            tracing::warn!(deployment = %s(d, "/metadata/name"), "progress deadline exceeded: no stable revision to roll back to");
        }
        return Ok(());
    };
    let template = good
        .at("/spec/template")
        .map(bare_template)
        .unwrap_or(json!({}));
    tracing::warn!(deployment = %s(d, "/metadata/name"), to_revision = revision(good), "progress deadline exceeded: rolling back");
    // The template is replaced whole (a merge patch would keep fields the bad revision
    // added), with compare-and-swap, retried on a concurrent change.
    let (ns, name) = (s(d, "/metadata/namespace"), s(d, "/metadata/name"));
    for _ in 0..5 {
        let mut current = client.get("deployments", ns, name).await?;
        current["spec"]["template"] = template.clone();
        match client.update("deployments", "", &current).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(bosun_client::Code::FailedPrecondition) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        assert_eq!(scaled(Some(&json!("25%")), 10, true, 25), 3);
        assert_eq!(scaled(Some(&json!("25%")), 10, false, 25), 2);
        assert_eq!(scaled(Some(&json!(2)), 10, true, 25), 2);
        assert_eq!(scaled(None, 4, true, 25), 1);
        assert_eq!(scaled(None, 3, false, 25), 0);
    }

    #[test]
    fn only_a_revision_that_once_completed_is_a_rollback_target() {
        let rs = |uid: &str, rev: i64, stable: bool| {
            let mut a = json!({REVISION: rev.to_string()});
            if stable {
                a[STABLE] = json!("true");
            }
            Arc::new(json!({"metadata": {"uid": uid, "annotations": a}}))
        };
        // v1 completed, v2 failed, then v1 came back as revision 3 and is slow to finish:
        // if it misses its deadline too, v2 (never complete) is no target, and v1 is the
        // one failing, so there is none.
        let owned = vec![rs("v2", 2, false), rs("v1", 3, true)];
        assert!(rollback_target(&owned, &owned[1]).is_none());
        // Two good revisions: v3 fails, v2 comes back and is slow. v2 once completed, so
        // it is not rolled back from (no swing between v2 and v1).
        let owned = vec![rs("v1", 1, true), rs("v3", 3, false), rs("v2", 4, true)];
        assert!(rollback_target(&owned, &owned[2]).is_none());
        let t = rollback_target(&owned, &owned[1]).map(|r| s(r, "/metadata/uid"));
        assert_eq!(t, Some("v2"));
        // v3 fails: the newest completed other revision is v1, not the failed v2.
        let owned = vec![rs("v2", 2, false), rs("v1", 3, true), rs("v3", 4, false)];
        let t = rollback_target(&owned, &owned[2]).map(|r| s(r, "/metadata/uid"));
        assert_eq!(t, Some("v1"));
        // v2 was replaced before it ever completed, then v3 fails: back to v1, the
        // newest that completed, not to the newer v2.
        let owned = vec![rs("v1", 1, true), rs("v2", 2, false), rs("v3", 3, false)];
        let t = rollback_target(&owned, &owned[2]).map(|r| s(r, "/metadata/uid"));
        assert_eq!(t, Some("v1"));
        // Among completed ones, the newest wins.
        let owned = vec![rs("a", 1, true), rs("b", 2, true), rs("c", 3, false)];
        let t = rollback_target(&owned, &owned[2]).map(|r| s(r, "/metadata/uid"));
        assert_eq!(t, Some("b"));
    }

    #[test]
    fn the_hash_ignores_its_own_label_and_follows_the_template() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "v1"}]}});
        let mut b = a.clone();
        b["metadata"]["labels"][HASH_LABEL] = json!(template_hash(&a));
        assert_eq!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = json!("v2");
        assert_ne!(template_hash(&a), template_hash(&c));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
