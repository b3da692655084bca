//! `bosun.api.v1.Pods`: container logs and exec, authorised here (RBAC on pods/log and
//! pods/exec, audited), then relayed to the agent of the pod's node over mTLS with this
//! server's own certificate (the agent accepts server certificates only).

use bosun_api::json::At;
use bosun_api::resources::agent_client::AgentClient;
use bosun_api::resources::pods_server::Pods;
use bosun_api::resources::{
    exec_input, ExecInput, LogsRequest, NodeUsage, Output, TopReply, TopRequest,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{kind_of, ResourceService};
use crate::authz::caller;
use crate::error::Error;

/// Exec input messages buffered between the caller and the agent.
const EXEC_QUEUE: usize = 32;

impl ResourceService {
    /// The agent of the node pod `ns/name` is bound to: a channel and the node's name.
    fn agent_of(&self, ns: &str, name: &str) -> Result<(AgentClient<Channel>, String), Status> {
        let pods = kind_of("pods")?;
        let pod = self
            .inner
            .store
            .get(&pods.key(ns, name))?
            .ok_or_else(|| Error::NotFound {
                resource: "pods".into(),
                name: name.into(),
            })?;
        let node = pod
            .object
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Status::failed_precondition(format!("pod {ns}/{name} is not bound to a node yet"))
            })?
            .to_string();
        Ok((self.agent_of_node(&node)?.0, node))
    }

    /// The agent of node `node`, and the Node object.
    fn agent_of_node(&self, node: &str) -> Result<(AgentClient<Channel>, Value), Status> {
        let nodes = kind_of("nodes")?;
        let n =
            self.inner.store.get(&nodes.key("", node))?.ok_or_else(|| {
                Status::failed_precondition(format!("node {node:?} does not exist"))
            })?;
        let ip = n
            .object
            .at("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("")
            .to_string();
        let port = n
            .object
            .at("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if ip.is_empty() || port == 0 {
            return Err(Status::failed_precondition(format!(
                "node {node:?} serves no logs, exec or usage (no agent port: a hollow node?)"
            )));
        }
        let dialer = self.inner.agents.as_ref().ok_or_else(|| {
            Status::unavailable("this server has no client certificate for agents")
        })?;
        let addr = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        let ch = dialer
            .channel(&addr, node)
            .map_err(|e| Status::internal(format!("agent address of node {node:?}: {e}")))?;
        Ok((AgentClient::new(ch), n.object))
    }

    /// Every stored object under `prefix`, decoded.
    fn scan_all(&self, prefix: &str) -> Result<Vec<Value>, Status> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (kvs, more, _) = self.inner.store.scan(prefix, after.as_deref(), 0, 1000)?;
            for kv in &kvs {
                out.push(self.inner.store.decode(kv)?.object);
            }
            match (more, kvs.last()) {
                (true, Some(last)) => after = Some(String::from_utf8_lossy(&last.key).into_owned()),
                _ => return Ok(out),
            }
        }
    }
}

/// Usage calls to agents in flight at once, and how long one may take.
const TOP_FANOUT: usize = 16;
const TOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn quantity_milli(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_str)
        .and_then(|q| bosun_api::admission::parse_quantity(q).ok())
        .and_then(|m| i64::try_from(m).ok())
        .unwrap_or(0)
}

/// An agent's error, said as the API server's: which node did not answer.
fn relay(node: &str, s: Status) -> Status {
    if s.code() == tonic::Code::Unavailable {
        Status::unavailable(format!(
            "the agent of node {node:?} does not answer: {}",
            s.message()
        ))
    } else {
        s
    }
}

#[tonic::async_trait]
impl Pods for ResourceService {
    async fn top(&self, req: Request<TopRequest>) -> Result<Response<TopReply>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let node_names: Vec<String> = if r.nodes {
            let nodes = kind_of("nodes")?;
            self.inner.authorize(&user, nodes, "list", "", "", "")?;
            self.scan_all(&nodes.prefix(""))?
                .iter()
                .filter_map(|n| {
                    n.at("/metadata/name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        } else {
            let pods = kind_of("pods")?;
            let ns = if r.all_namespaces {
                ""
            } else {
                r.namespace.as_str()
            };
            self.inner.authorize(&user, pods, "list", "", ns, "")?;
            let mut names: Vec<String> = self
                .scan_all(&pods.prefix(ns))?
                .iter()
                .filter_map(|p| {
                    p.at("/spec/nodeName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .filter(|n| !n.is_empty())
                .collect();
            names.sort();
            names.dedup();
            names
        };
        let asks = node_names.into_iter().map(|node| {
            let target = self.agent_of_node(&node);
            let req = r.clone();
            async move {
                let (mut agent, obj) = match target {
                    Ok(t) => t,
                    Err(e) => return (node, None, Err(e.message().to_string())),
                };
                let got = match tokio::time::timeout(TOP_TIMEOUT, agent.top(req)).await {
                    Ok(Ok(reply)) => Ok(reply.into_inner()),
                    Ok(Err(s)) => Err(relay(&node, s).message().to_string()),
                    Err(_) => Err(format!(
                        "the agent of node {node:?} did not answer within {TOP_TIMEOUT:?}"
                    )),
                };
                (node, Some(obj), got)
            }
        });
        let answers: Vec<_> = futures::stream::iter(asks)
            .buffer_unordered(TOP_FANOUT)
            .collect()
            .await;
        let mut reply = TopReply::default();
        for (node, obj, got) in answers {
            let alloc = obj.as_ref().and_then(|o| o.at("/status/allocatable"));
            let mut usage = NodeUsage {
                name: node.clone(),
                cpu_allocatable_millicores: quantity_milli(alloc.and_then(|a| a.get("cpu"))),
                memory_allocatable_bytes: quantity_milli(alloc.and_then(|a| a.get("memory")))
                    / 1000,
                ..Default::default()
            };
            match got {
                Ok(t) => {
                    if let Some(n) = t.nodes.first() {
                        usage.cpu_millicores = n.cpu_millicores;
                        usage.memory_bytes = n.memory_bytes;
                    }
                    reply.pods.extend(t.pods);
                }
                Err(e) => usage.error = e,
            }
            reply.nodes.push(usage);
        }
        reply.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        reply
            .pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(Response::new(reply))
    }

    type LogsStream = BoxStream<'static, Result<Output, Status>>;
    type ExecStream = BoxStream<'static, Result<Output, Status>>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let pods = kind_of("pods")?;
        self.inner
            .authorize(&user, pods, "get", "log", &r.namespace, &r.name)?;
        let (mut agent, node) = self.agent_of(&r.namespace, &r.name)?;
        let stream = agent
            .logs(r)
            .await
            .map_err(|s| relay(&node, s))?
            .into_inner();
        Ok(Response::new(stream.boxed()))
    }

    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let user = caller(&req)?;
        let mut input = req.into_inner();
        let first = input.message().await?;
        let start = match &first {
            Some(ExecInput {
                input: Some(exec_input::Input::Start(s)),
            }) => s.clone(),
            _ => {
                return Err(Status::invalid_argument(
                    "the first exec message must be start",
                ))
            }
        };
        let pods = kind_of("pods")?;
        let target = ("exec", start.namespace.as_str(), start.name.as_str());
        let allowed =
            self.inner
                .authorize(&user, pods, "create", "exec", &start.namespace, &start.name);
        // An exec changes what runs: audited like a write, refused or not.
        self.record(&user, "create", pods, target, &allowed.as_ref().map(|_| ()));
        allowed?;
        let (mut agent, node) = self.agent_of(&start.namespace, &start.name)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(EXEC_QUEUE);
        let _ = tx
            .send(ExecInput {
                input: Some(exec_input::Input::Start(start)),
            })
            .await;
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = input.message() => m,
                };
                match m {
                    Ok(Some(m)) => {
                        if tx.send(m).await.is_err() {
                            break;
                        }
                    }
                    // The caller hung up or finished: the agent sees the end of stdin.
                    Ok(None) | Err(_) => break,
                }
            }
        });
        let out = agent
            .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| relay(&node, s))?
            .into_inner();
        Ok(Response::new(out.boxed()))
    }
}
