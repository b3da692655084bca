//! Workload verbs: `scale`, `set image`, `rollout status|history|undo`, `cordon`,
//! `uncordon`, `drain`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bosun_client::{Client, Query};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::config::ClientConfig;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

/// `bosun scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// `deployment/web`, or `deployment web` (deployments, replicasets).
    target: Vec<String>,
    /// Desired replicas.
    #[arg(long)]
    replicas: i64,
    /// Namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `bosun set`.
#[derive(clap::Subcommand, Debug)]
pub enum Set {
    /// Change container images: `bosun set image deployment/web web=img:v2`.
    Image {
        /// `deployment/web` (deployments, replicasets, daemonsets, pods).
        target: String,
        /// `container=image`, one or more.
        #[arg(required = true)]
        images: Vec<String>,
        /// Namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

/// `bosun rollout`.
#[derive(clap::Subcommand, Debug)]
pub enum Rollout {
    /// Follow a Deployment's rollout until it completes or fails.
    Status {
        /// `deployment/web`.
        target: String,
        /// Namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Give up after this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// List a Deployment's revisions.
    History {
        /// `deployment/web`.
        target: String,
        /// Namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Go back to the previous (or a given) revision.
    Undo {
        /// `deployment/web`.
        target: String,
        /// Namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The revision to go back to (default: the one before the current).
        #[arg(long = "to-revision")]
        to_revision: Option<i64>,
    },
}

/// `bosun cordon|uncordon|drain`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The node.
    node: String,
    /// drain: seconds pods get to stop (default: their own).
    #[arg(long = "grace-period")]
    grace_period: Option<i64>,
}

fn connect(config: Option<&Path>) -> Result<(Client, ClientConfig)> {
    let cfg = ClientConfig::find(config)?;
    Ok((Client::connect(&cfg.servers, &cfg.tls())?, cfg))
}

/// `kind/name` or `kind name` → (plural resource, name).
fn target(parts: &[String]) -> Result<(&'static bosun_api::kinds::KindInfo, String)> {
    let (kind, name) = match parts {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .ok_or_else(|| anyhow!("give the target as KIND/NAME or KIND NAME"))?,
        [k, n] => (k.clone(), n.clone()),
        _ => bail!("give the target as KIND/NAME or KIND NAME"),
    };
    let k = bosun_api::kinds::resolve(&kind)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type {kind:?}"))?;
    Ok((k, name))
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// `bosun scale`.
pub async fn scale(a: ScaleArgs, config: Option<&Path>) -> Result<()> {
    let (client, cfg) = connect(config)?;
    let (k, name) = target(&a.target)?;
    if !matches!(k.resource, "deployments" | "replicasets") {
        bail!(
            "{} cannot be scaled (deployments and replicasets can)",
            k.resource
        );
    }
    if a.replicas < 0 {
        bail!("--replicas must be 0 or more");
    }
    let ns = a.namespace.unwrap_or(cfg.namespace);
    client
        .patch(
            k.resource,
            &ns,
            &name,
            "",
            &json!({"spec": {"replicas": a.replicas}}),
        )
        .await?;
    println!("{}.{}/{name} scaled", k.singular, k.group);
    Ok(())
}

/// `bosun set …`.
pub async fn set(a: Set, config: Option<&Path>) -> Result<()> {
    let Set::Image {
        target: t,
        images,
        namespace,
    } = a;
    let (client, cfg) = connect(config)?;
    let (k, name) = target(&[t])?;
    let ns = namespace.unwrap_or(cfg.namespace);
    let wanted: Vec<(String, String)> = images
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(c, i)| (c.to_string(), i.to_string()))
                .ok_or_else(|| anyhow!("{p:?}: expected CONTAINER=IMAGE"))
        })
        .collect::<Result<_>>()?;
    let path = if k.resource == "pods" {
        "/spec/containers"
    } else {
        "/spec/template/spec/containers"
    };
    // Read, change, write with compare-and-swap; a concurrent change makes us retry.
    for _ in 0..5 {
        let mut obj = client.get(k.resource, &ns, &name).await?;
        let containers = obj
            .pointer_mut(path)
            .and_then(Value::as_array_mut)
            .ok_or_else(|| anyhow!("{} {name:?} has no containers", k.singular))?;
        for (c, img) in &wanted {
            let found = containers
                .iter_mut()
                .find(|x| x.get("name").and_then(Value::as_str) == Some(c.as_str()))
                .ok_or_else(|| anyhow!("unable to find container named {c:?}"))?;
            found["image"] = json!(img);
        }
        match client.update(k.resource, "", &obj).await {
            Ok(_) => {
                println!("{}/{name} image updated", k.singular);
                return Ok(());
            }
            Err(e) if e.code() == Some(bosun_client::Code::FailedPrecondition) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{}/{name} kept changing; try again", k.singular)
}

async fn revisions(client: &Client, ns: &str, d: &Value) -> Result<Vec<Value>> {
    let uid = s(d, "/metadata/uid");
    let mut sets: Vec<Value> = client
        .list_all(&Query {
            resource: "replicasets".into(),
            namespace: ns.into(),
            ..Default::default()
        })
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|o| s(o, "/uid") == uid))
        })
        .collect();
    sets.sort_by_key(rev_of);
    Ok(sets)
}

fn rev_of(r: &Value) -> i64 {
    r.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn deployment_target(t: &str) -> Result<String> {
    let (k, name) = target(&[t.to_string()])?;
    if k.resource != "deployments" {
        bail!("rollout works on deployments, not {}", k.resource);
    }
    Ok(name)
}

/// `bosun rollout …`.
pub async fn rollout(r: Rollout, config: Option<&Path>) -> Result<()> {
    let (client, cfg) = connect(config)?;
    match r {
        Rollout::Status {
            target: t,
            namespace,
            timeout,
        } => {
            let name = deployment_target(&t)?;
            let ns = namespace.unwrap_or(cfg.namespace);
            let wait = async {
                let q = Query {
                    resource: "deployments".into(),
                    namespace: ns.clone(),
                    fields: format!("metadata.name={name}"),
                    ..Default::default()
                };
                let mut stream = Box::pin(client.watch(&q, "", false).await?);
                let mut last = String::new();
                while let Some(ev) = stream.next().await {
                    let d = ev?.object;
                    let (msg, done) = rollout_state(&d)?;
                    if msg != last {
                        println!("{msg}");
                        last = msg;
                    }
                    if done {
                        return Ok(());
                    }
                }
                bail!("the watch ended before the rollout finished")
            };
            if timeout == 0 {
                wait.await
            } else {
                tokio::time::timeout(Duration::from_secs(timeout), wait)
                    .await
                    .map_err(|_| {
                        anyhow!("timed out waiting for the rollout of deployment {name:?}")
                    })?
            }
        }
        Rollout::History {
            target: t,
            namespace,
        } => {
            let name = deployment_target(&t)?;
            let ns = namespace.unwrap_or(cfg.namespace);
            let d = client.get("deployments", &ns, &name).await?;
            println!("deployment.apps/{name}");
            println!("REVISION  CHANGE-CAUSE");
            for r in revisions(&client, &ns, &d).await? {
                let cause = r
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get("kubernetes.io/change-cause"))
                    .and_then(Value::as_str)
                    .unwrap_or("<none>");
                let images: Vec<&str> = r
                    .pointer("/spec/template/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| s(c, "/image"))
                    .collect();
                println!("{:<9} {cause}  ({})", rev_of(&r), images.join(", "));
            }
            Ok(())
        }
        Rollout::Undo {
            target: t,
            namespace,
            to_revision,
        } => {
            let name = deployment_target(&t)?;
            let ns = namespace.unwrap_or(cfg.namespace);
            let d = client.get("deployments", &ns, &name).await?;
            let sets = revisions(&client, &ns, &d).await?;
            let current = sets.iter().map(rev_of).max().unwrap_or(0);
            let to = match to_revision {
                Some(r) => sets.iter().find(|s| rev_of(s) == r),
                None => sets
                    .iter()
                    .filter(|s| rev_of(s) < current)
                    .max_by_key(|s| rev_of(s)),
            }
            .ok_or_else(|| {
                anyhow!(
                    "no revision to go back to (revisions: {:?})",
                    sets.iter().map(rev_of).collect::<Vec<_>>()
                )
            })?;
            let mut template = to.pointer("/spec/template").cloned().unwrap_or(json!({}));
            if let Some(l) = template
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                l.remove(HASH_LABEL);
            }
            let mut d = d;
            d["spec"]["template"] = template;
            client
                .update("deployments", "", &d)
                .await
                .context("rolling back")?;
            println!(
                "deployment.apps/{name} rolled back to revision {}",
                rev_of(to)
            );
            Ok(())
        }
    }
}

/// What `rollout status` says about a Deployment, and whether it is done.
fn rollout_state(d: &Value) -> Result<(String, bool)> {
    let name = s(d, "/metadata/name");
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if i(d, "/status/observedGeneration") < i(d, "/metadata/generation") {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let failed = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                s(c, "/type") == "Progressing" && s(c, "/reason") == "ProgressDeadlineExceeded"
            })
        });
    if failed {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let updated = i(d, "/status/updatedReplicas");
    let total = i(d, "/status/replicas");
    let available = i(d, "/status/availableReplicas");
    if updated < want {
        return Ok((format!("Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."), false));
    }
    if total > updated {
        return Ok((format!("Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...", total - updated), false));
    }
    if available < updated {
        return Ok((format!("Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."), false));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

/// `bosun cordon` / `uncordon`.
pub async fn cordon(a: NodeArgs, on: bool, config: Option<&Path>) -> Result<()> {
    let (client, _) = connect(config)?;
    client
        .patch(
            "nodes",
            "",
            &a.node,
            "",
            &json!({"spec": {"unschedulable": if on { json!(true) } else { Value::Null }}}),
        )
        .await?;
    println!(
        "node/{} {}",
        a.node,
        if on { "cordoned" } else { "uncordoned" }
    );
    Ok(())
}

/// `bosun drain`: cordon, then delete the node's pods (not those of DaemonSets) and wait
/// until they are gone.
pub async fn drain(a: NodeArgs, config: Option<&Path>) -> Result<()> {
    let (client, _) = connect(config)?;
    client
        .patch(
            "nodes",
            "",
            &a.node,
            "",
            &json!({"spec": {"unschedulable": true}}),
        )
        .await?;
    println!("node/{} cordoned", a.node);
    let q = Query {
        resource: "pods".into(),
        fields: format!("spec.nodeName={}", a.node),
        ..Default::default()
    };
    let pods = client.list_all(&q).await?.items;
    let mut evicted = Vec::new();
    for p in &pods {
        let by_daemonset = p
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|o| s(o, "/kind") == "DaemonSet"));
        if by_daemonset {
            continue;
        }
        let (ns, name) = (s(p, "/metadata/namespace"), s(p, "/metadata/name"));
        match client.delete("pods", ns, name, a.grace_period).await {
            Ok(_) => {
                println!("evicting pod {ns}/{name}");
                evicted.push((ns.to_string(), name.to_string()));
            }
            Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (ns, name) in evicted {
        loop {
            match client.get("pods", &ns, &name).await {
                Err(e) if e.code() == Some(bosun_client::Code::NotFound) => break,
                Err(e) => return Err(e.into()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        println!("pod/{name} evicted");
    }
    println!("node/{} drained", a.node);
    Ok(())
}
