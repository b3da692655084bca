//! The kubectl-like verbs: `apply`, `get`, `describe`, `delete`, `auth can-i`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bosun_api::kinds::{self, KindInfo};
use bosun_client::{Client, Query};
use futures::StreamExt;
use serde_json::Value;

use crate::config::ClientConfig;
use crate::print;

/// Where a verb looks: `-n NAMESPACE` or `-A`.
#[derive(clap::Args, Debug, Clone)]
pub struct Scope {
    /// Namespace (default: the client config's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
}

/// `bosun apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest files or directories (YAML or JSON, multi-document); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `bosun get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Resource type(s), comma-separated (pods, deploy, svc, …).
    resource: String,
    /// Names (all when none).
    names: Vec<String>,
    #[command(flatten)]
    scope: Scope,
    /// Label selector.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    /// Field selector.
    #[arg(long = "field-selector")]
    field_selector: Option<String>,
    /// Output: wide, yaml, json or name.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// After listing, stream changes until interrupted.
    #[arg(short = 'w', long)]
    watch: bool,
}

/// `bosun describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Resource type.
    resource: String,
    /// Names (all when none).
    names: Vec<String>,
    #[command(flatten)]
    scope: Scope,
    /// Label selector.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
}

/// `bosun delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Resource type (when not using -f).
    resource: Option<String>,
    /// Names.
    names: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[command(flatten)]
    scope: Scope,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    all: bool,
    /// Seconds a pod is given to stop (0: at once).
    #[arg(long = "grace-period")]
    grace_period: Option<i64>,
    /// Accepted for kubectl compatibility (with --grace-period 0).
    #[arg(long)]
    force: bool,
    /// What happens to dependents: background (default), foreground or orphan.
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    cascade: String,
    /// Do not fail when an object is already gone.
    #[arg(long = "ignore-not-found")]
    ignore_not_found: bool,
    /// Wait until the objects are gone (finalizers, pod grace periods, namespaces being
    /// emptied), as kubectl does; `--wait=false` returns at once.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long to wait, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// `bosun auth`.
#[derive(clap::Subcommand, Debug)]
pub enum Auth {
    /// Whether an action is allowed: prints yes or no (exit code 0 or 1).
    CanI {
        /// Verb: get, list, watch, create, update, patch, delete.
        verb: String,
        /// Resource (pods, deployments.apps, pods/status).
        resource: String,
        /// Object name.
        name: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Ask for this user (administrators only).
        #[arg(long = "as")]
        as_user: Option<String>,
        /// … in this group (repeatable).
        #[arg(long = "as-group")]
        as_group: Vec<String>,
    },
}

fn client(config: Option<&Path>) -> Result<(Client, ClientConfig)> {
    let cfg = ClientConfig::find(config)?;
    let client = Client::connect(&cfg.servers, &cfg.tls())?;
    Ok((client, cfg))
}

fn namespace(scope: &Scope, cfg: &ClientConfig) -> String {
    if scope.all_namespaces {
        String::new()
    } else {
        scope
            .namespace
            .clone()
            .unwrap_or_else(|| cfg.namespace.clone())
    }
}

fn kind(name: &str) -> Result<&'static KindInfo> {
    kinds::resolve(name).ok_or_else(|| {
        anyhow!(
            "the server doesn't have a resource type {name:?} (bosun serves: {})",
            kinds::KINDS
                .iter()
                .map(|k| k.resource)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// `deployment.apps` / `pod`, as kubectl names kinds in its messages.
fn kind_ref(k: &KindInfo) -> String {
    if k.group.is_empty() {
        k.singular.to_string()
    } else {
        format!("{}.{}", k.singular, k.group)
    }
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Reads manifests: files, directories (their .yaml/.yml/.json files, in name order) or
/// stdin; multi-document YAML; `kind: List` unpacked. Each with where it came from.
///
/// # Errors
/// Unreadable files and malformed documents, naming the file and document.
pub fn load_manifests(sources: &[String]) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for src in sources {
        if src == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            parse_documents("stdin", &text, &mut out)?;
            continue;
        }
        let path = PathBuf::from(src);
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("reading directory {src}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path]
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            parse_documents(&f.display().to_string(), &text, &mut out)?;
        }
    }
    Ok(out)
}

fn parse_documents(source: &str, text: &str, out: &mut Vec<(String, Value)>) -> Result<()> {
    use serde::Deserialize;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let where_ = format!("{source}: document {}", i + 1);
        let yaml = serde_yaml::Value::deserialize(doc).with_context(|| where_.clone())?;
        if yaml.is_null() {
            continue;
        }
        let v: Value = serde_json::to_value(&yaml).with_context(|| where_.clone())?;
        if !v.is_object() {
            bail!("{where_}: a manifest must be a mapping with apiVersion and kind");
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                out.push((where_.clone(), item));
            }
        } else {
            out.push((where_, v));
        }
    }
    Ok(())
}

fn manifest_kind(where_: &str, m: &Value) -> Result<&'static KindInfo> {
    let api_version = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = m.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind_name.is_empty() {
        bail!("{where_}: apiVersion and kind are required");
    }
    kinds::by_kind(api_version, kind_name).ok_or_else(|| {
        anyhow!("{where_}: no kind {kind_name:?} in version {api_version:?} is served by bosun")
    })
}

/// `bosun apply -f …`.
pub async fn apply(a: ApplyArgs, config: Option<&Path>, verbose: bool) -> Result<()> {
    let manifests = load_manifests(&a.files)?;
    if manifests.is_empty() {
        bail!("no objects passed to apply");
    }
    let (client, cfg) = client(config)?;
    let ns = a.namespace.clone().unwrap_or(cfg.namespace.clone());
    let mut failed = 0;
    for (where_, m) in manifests {
        let k = match manifest_kind(&where_, &m) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
                continue;
            }
        };
        if let Some(explicit) = &a.namespace {
            let own = namespace_of(&m);
            if k.namespaced && !own.is_empty() && own != explicit {
                eprintln!("error: {where_}: the namespace of the object ({own}) does not match the namespace given with -n ({explicit})");
                failed += 1;
                continue;
            }
        }
        match client.apply(&ns, &m).await {
            Ok(applied) => {
                println!(
                    "{}/{} {}",
                    kind_ref(k),
                    name_of(&applied.object),
                    applied.outcome
                );
            }
            Err(e) => {
                eprintln!("{e} ({where_})");
                failed += 1;
            }
        }
        if verbose {
            eprintln!("answered by {}", client.server());
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be applied");
    }
    Ok(())
}

fn query(k: &KindInfo, ns: &str, labels: &Option<String>, fields: &Option<String>) -> Query {
    Query {
        resource: k.resource.to_string(),
        namespace: if k.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        labels: labels.clone().unwrap_or_default(),
        fields: fields.clone().unwrap_or_default(),
        limit: 500,
        continue_token: String::new(),
    }
}

/// `bosun get …`.
pub async fn get(g: GetArgs, config: Option<&Path>, verbose: bool) -> Result<()> {
    let (client, cfg) = client(config)?;
    let ns = namespace(&g.scope, &cfg);
    let output = g.output.clone().unwrap_or_default();
    if !matches!(output.as_str(), "" | "wide" | "yaml" | "json" | "name") {
        bail!("unknown output format {output:?}: use wide, yaml, json or name");
    }
    // "all", as kubectl: the workload kinds and services.
    let expanded = g.resource.replace(
        "all",
        "pods,services,daemonsets,deployments,replicasets,jobs",
    );
    let types: Vec<&str> = expanded.split(',').filter(|s| !s.is_empty()).collect();
    if g.watch && types.len() != 1 {
        bail!("watch needs exactly one resource type");
    }
    let mut first = true;
    for t in types {
        let k = kind(t)?;
        let (items, rv) = if g.names.is_empty() {
            let l = client
                .list_all(&query(k, &ns, &g.selector, &g.field_selector))
                .await?;
            (l.items, l.resource_version)
        } else {
            let mut items = Vec::new();
            for n in &g.names {
                items.push(client.get(k.resource, &ns, n).await?);
            }
            (items, String::new())
        };
        if verbose {
            eprintln!("answered by {}", client.server());
        }
        let single = !g.names.is_empty() && g.names.len() == 1;
        match output.as_str() {
            "yaml" | "json" => {
                let doc = if single {
                    items.first().cloned().unwrap_or(Value::Null)
                } else {
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": rv}})
                };
                if output == "yaml" {
                    print!("{}", serde_yaml::to_string(&doc)?);
                } else {
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                }
            }
            "name" => {
                for o in &items {
                    println!("{}/{}", kind_ref(k), name_of(o));
                }
            }
            _ => {
                if items.is_empty() && !g.watch {
                    if k.namespaced && !ns.is_empty() {
                        eprintln!("No resources found in {ns} namespace.");
                    } else {
                        eprintln!("No resources found");
                    }
                    continue;
                }
                if !first {
                    println!();
                }
                first = false;
                let t = print::table(
                    k.kind,
                    &items,
                    output == "wide",
                    g.scope.all_namespaces && k.namespaced,
                    jiff::Timestamp::now(),
                );
                print!("{}", t.render());
            }
        }
        if g.watch {
            watch_rows(&client, k, &ns, &g, &output, &rv).await?;
        }
    }
    Ok(())
}

async fn watch_rows(
    client: &Client,
    k: &KindInfo,
    ns: &str,
    g: &GetArgs,
    output: &str,
    rv: &str,
) -> Result<()> {
    let q = query(k, ns, &g.selector, &g.field_selector);
    let mut stream = Box::pin(client.watch(&q, rv, false).await?);
    let wide = output == "wide";
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else {
            bail!("the watch ended (server {} went away?)", client.server());
        };
        let ev = ev?;
        match ev.kind.as_str() {
            "ERROR" => bail!(
                "watch: {}",
                ev.object
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
            ),
            "BOOKMARK" => continue,
            _ => {}
        }
        if !g.names.is_empty() && !g.names.iter().any(|n| n == name_of(&ev.object)) {
            continue;
        }
        match output {
            "yaml" => print!("---\n{}", serde_yaml::to_string(&ev.object)?),
            "json" => println!("{}", serde_json::to_string(&ev.object)?),
            "name" => println!("{}/{}", kind_ref(k), name_of(&ev.object)),
            _ => {
                let t = print::table(
                    k.kind,
                    std::slice::from_ref(&ev.object),
                    wide,
                    g.scope.all_namespaces && k.namespaced,
                    jiff::Timestamp::now(),
                );
                let rendered = t.render();
                // Rows only: the header was printed with the list.
                for line in rendered.lines().skip(1) {
                    println!("{line}");
                }
            }
        }
    }
}

/// `bosun describe …`.
pub async fn describe(d: DescribeArgs, config: Option<&Path>, verbose: bool) -> Result<()> {
    let (client, cfg) = client(config)?;
    let ns = namespace(&d.scope, &cfg);
    let k = kind(&d.resource)?;
    let objs = if d.names.is_empty() {
        client
            .list_all(&query(k, &ns, &d.selector, &None))
            .await?
            .items
    } else {
        let mut v = Vec::new();
        for n in &d.names {
            v.push(client.get(k.resource, &ns, n).await?);
        }
        v
    };
    if verbose {
        eprintln!("answered by {}", client.server());
    }
    for (i, o) in objs.iter().enumerate() {
        let events_ns = if k.namespaced {
            namespace_of(o).to_string()
        } else {
            "default".to_string()
        };
        let fields = format!(
            "involvedObject.kind={},involvedObject.name={}",
            k.kind,
            name_of(o)
        );
        let events = client
            .list_all(&Query {
                resource: "events".into(),
                namespace: events_ns,
                fields,
                ..Default::default()
            })
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        if i > 0 {
            println!("\n");
        }
        print!("{}", print::describe(o, &events, jiff::Timestamp::now()));
    }
    Ok(())
}

/// `bosun delete …`.
pub async fn delete(d: DeleteArgs, config: Option<&Path>, verbose: bool) -> Result<()> {
    let (client, cfg) = client(config)?;
    let ns = namespace(&d.scope, &cfg);
    let mut targets: Vec<(&'static KindInfo, String, String)> = Vec::new();
    if !d.files.is_empty() {
        if d.resource.is_some() {
            bail!("give either -f or a resource type, not both");
        }
        // Reverse order: a namespace (usually first in a file) goes last.
        for (where_, m) in load_manifests(&d.files)?.into_iter().rev() {
            let k = manifest_kind(&where_, &m)?;
            let obj_ns = match namespace_of(&m) {
                "" => ns.clone(),
                n => n.to_string(),
            };
            targets.push((k, obj_ns, name_of(&m).to_string()));
        }
    } else {
        let Some(r) = &d.resource else {
            bail!("say what to delete: a resource type and names, -l, --all, or -f FILE");
        };
        let k = kind(r)?;
        if !d.names.is_empty() {
            for n in &d.names {
                targets.push((k, ns.clone(), n.clone()));
            }
        } else if d.selector.is_some() || d.all {
            for o in client
                .list_all(&query(k, &ns, &d.selector, &None))
                .await?
                .items
            {
                targets.push((k, namespace_of(&o).to_string(), name_of(&o).to_string()));
            }
        } else {
            bail!("resource(s) were provided, but no name was specified: give names, -l SELECTOR or --all");
        }
    }
    let _ = d.force;
    let mut failed = 0;
    let mut gone = Vec::new();
    for (k, ns, name) in targets {
        let ns = if k.namespaced { ns } else { String::new() };
        let mut policy = d.cascade.clone();
        if let Some(first) = policy.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let req = bosun_api::resources::DeleteRequest {
            target: Some(bosun_api::resources::Target {
                resource: k.resource.into(),
                namespace: ns.clone(),
                name: name.clone(),
                subresource: String::new(),
            }),
            grace_period_seconds: d.grace_period,
            propagation_policy: policy,
            ..Default::default()
        };
        match client.delete_with(req).await {
            Ok(_) => {
                println!("{} {:?} deleted", kind_ref(k), name);
                gone.push((k, ns.clone(), name.clone()));
            }
            Err(e) if d.ignore_not_found && e.code() == Some(tonic::Code::NotFound) => {}
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
        if verbose {
            eprintln!("answered by {}", client.server());
        }
    }
    if d.wait {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(d.timeout);
        for (k, ns, name) in gone {
            loop {
                match client.get(k.resource, &ns, &name).await {
                    Err(e) if e.code() == Some(tonic::Code::NotFound) => break,
                    Err(e) => return Err(e.into()),
                    Ok(_) if std::time::Instant::now() >= deadline => {
                        bail!(
                            "timed out waiting for {} {name:?} to be deleted",
                            kind_ref(k)
                        )
                    }
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be deleted");
    }
    Ok(())
}

/// `bosun auth …`; returns whether the answer was yes.
pub async fn auth(a: Auth, config: Option<&Path>) -> Result<bool> {
    let Auth::CanI {
        verb,
        resource,
        name,
        namespace,
        as_user,
        as_group,
    } = a;
    let (client, cfg) = client(config)?;
    let (res, sub) = match resource.split_once('/') {
        Some((r, s)) => (r.to_string(), s.to_string()),
        None => (resource.clone(), String::new()),
    };
    let k = kind(&res)?;
    let ns = if k.namespaced {
        namespace.unwrap_or(cfg.namespace)
    } else {
        String::new()
    };
    let reply = client
        .review(bosun_api::resources::ReviewRequest {
            verb,
            resource: k.resource.into(),
            subresource: sub,
            namespace: ns,
            name: name.unwrap_or_default(),
            user: as_user.unwrap_or_default(),
            groups: as_group,
        })
        .await?;
    println!("{}", if reply.allowed { "yes" } else { "no" });
    if !reply.allowed && !reply.reason.is_empty() {
        eprintln!("{}", reply.reason);
    }
    Ok(reply.allowed)
}

/// `bosun secrets`.
#[derive(clap::Subcommand, Debug)]
pub enum Secrets {
    /// Rewrite Secrets so that they are encrypted with the current key (after a rotation).
    Reencrypt {
        #[command(flatten)]
        scope: Scope,
    },
}

/// `bosun secrets …`.
pub async fn secrets(s: Secrets, config: Option<&Path>, verbose: bool) -> Result<()> {
    let Secrets::Reencrypt { scope } = s;
    let (client, cfg) = client(config)?;
    let ns = namespace(&scope, &cfg);
    let k = kind("secrets")?;
    let list = client.list_all(&query(k, &ns, &None, &None)).await?;
    let mut rewritten = 0;
    for o in &list.items {
        // An empty patch changes nothing but is written when the stored copy uses an old key.
        let after = client
            .patch(
                k.resource,
                namespace_of(o),
                name_of(o),
                "",
                &serde_json::json!({}),
            )
            .await?;
        if after.pointer("/metadata/resourceVersion") != o.pointer("/metadata/resourceVersion") {
            rewritten += 1;
        }
    }
    if verbose {
        eprintln!("answered by {}", client.server());
    }
    println!(
        "{} secret(s) checked, {rewritten} rewritten with the current key",
        list.items.len()
    );
    Ok(())
}
