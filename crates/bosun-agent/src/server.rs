//! The agent's own port: container logs and exec for the API servers, which relay
//! `bosun logs` and `bosun exec` after RBAC. mTLS; only server certificates
//! (`system:servers`) are accepted, so a user reaches it only through an API server.

use std::net::SocketAddr;
use std::sync::Arc;

use bosun_api::resources::agent_server::{Agent, AgentServer};
use bosun_api::resources::{
    exec_input, output, ContainerUsage, ExecInput, LogsRequest, NodeUsage, Output, PodUsage,
    TopReply, TopRequest,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::pod::{LABEL_AGENT, LABEL_CONTAINER, LABEL_POD, LABEL_ROLE};
use crate::runtime::{Container, ContainerRuntime, Stream};
use crate::Settings;

/// Serves the agent's port until `cancel`.
///
/// # Errors
/// When the address cannot be bound, or the server fails.
pub async fn serve<R: ContainerRuntime>(
    rt: Arc<R>,
    settings: Arc<Settings>,
    addr: SocketAddr,
    tls: &bosun_pki::TlsMaterial,
    cancel: CancellationToken,
) -> Result<(), String> {
    let config = bosun_pki::server_config(tls).map_err(|e| format!("agent port TLS: {e}"))?;
    let incoming = bosun_pki::TlsIncoming::bind(addr, config, true, "agent")
        .await
        .map_err(|e| format!("binding the agent port {addr}: {e}"))?;
    tracing::info!(%addr, "agent port (logs, exec) listening");
    let tasks = TaskTracker::new();
    let svc = AgentService {
        rt,
        settings,
        tasks: tasks.clone(),
        cancel: cancel.clone(),
    };
    let r = tonic::transport::Server::builder()
        .add_service(AgentServer::new(svc))
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned())
        .await
        .map_err(|e| format!("agent port: {e}"));
    tasks.close();
    tasks.wait().await;
    r
}

struct AgentService<R> {
    rt: Arc<R>,
    settings: Arc<Settings>,
    /// stdin relays of running execs.
    tasks: TaskTracker,
    cancel: CancellationToken,
}

fn out(o: output::Output) -> Output {
    Output { output: Some(o) }
}

impl<R: ContainerRuntime> AgentService<R> {
    /// The container `name` (or the pod's only container) of pod `ns/pod`: its latest
    /// instance, or the one before with `previous`.
    async fn find(
        &self,
        ns: &str,
        pod: &str,
        name: &str,
        previous: bool,
    ) -> Result<Container, Status> {
        let mut cs: Vec<Container> = self
            .rt
            .list(LABEL_POD, &format!("{ns}/{pod}"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .filter(|c| c.labels.get(LABEL_AGENT) == Some(&self.settings.agent_id))
            .filter(|c| c.labels.get(LABEL_ROLE).map(String::as_str) != Some("sandbox"))
            .collect();
        if cs.is_empty() {
            return Err(Status::not_found(format!(
                "pod {ns}/{pod} has no containers on node {}",
                self.settings.node
            )));
        }
        let mut names: Vec<String> = cs
            .iter()
            .filter(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some("app"))
            .filter_map(|c| c.labels.get(LABEL_CONTAINER).cloned())
            .collect();
        names.sort();
        names.dedup();
        let name = if name.is_empty() {
            match names.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "a container name must be specified for pod {pod}, choose one of: {names:?}"
                    )))
                }
            }
        } else {
            name.to_string()
        };
        cs.retain(|c| c.labels.get(LABEL_CONTAINER) == Some(&name));
        cs.sort_by_key(|c| {
            c.labels
                .get(crate::pod::LABEL_ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let pick = if previous {
            cs.len().checked_sub(2).and_then(|i| cs.get(i))
        } else {
            cs.last()
        };
        pick.cloned().ok_or_else(|| {
            if previous {
                Status::not_found(format!(
                    "previous terminated container {name:?} in pod {pod:?} not found"
                ))
            } else {
                Status::not_found(format!("container {name:?} is not valid for pod {pod:?}"))
            }
        })
    }
}

/// Usage reads in flight at once (Docker samples each container for about a second).
const USAGE_READS: usize = 8;

#[tonic::async_trait]
impl<R: ContainerRuntime> Agent for AgentService<R> {
    async fn top(&self, req: Request<TopRequest>) -> Result<Response<TopReply>, Status> {
        let r = req.into_inner();
        let cs: Vec<Container> = self
            .rt
            .list(LABEL_AGENT, &self.settings.agent_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .filter(|c| c.state.running())
            .filter(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some("app"))
            .filter(|c| {
                r.nodes
                    || r.all_namespaces
                    || c.labels
                        .get(LABEL_POD)
                        .is_some_and(|p| p.split('/').next() == Some(r.namespace.as_str()))
            })
            .collect();
        let rt = self.rt.clone();
        let usages: Vec<(Container, Option<crate::runtime::Usage>)> = futures::stream::iter(cs)
            .map(|c| {
                let rt = rt.clone();
                async move {
                    let u = rt.usage(&c.id).await.ok();
                    (c, u)
                }
            })
            .buffer_unordered(USAGE_READS)
            .collect()
            .await;
        let mut pods: std::collections::BTreeMap<String, PodUsage> = Default::default();
        let (mut cpu, mut mem) = (0i64, 0i64);
        for (c, u) in usages {
            let Some(u) = u else { continue };
            let key = c.labels.get(LABEL_POD).cloned().unwrap_or_default();
            let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
            let millis = (u.cpu_cores * 1000.0).round() as i64;
            let bytes = i64::try_from(u.memory_bytes).unwrap_or(i64::MAX);
            cpu += millis;
            mem = mem.saturating_add(bytes);
            pods.entry(key.clone())
                .or_insert_with(|| PodUsage {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    containers: Vec::new(),
                })
                .containers
                .push(ContainerUsage {
                    name: c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                    cpu_millicores: millis,
                    memory_bytes: bytes,
                });
        }
        Ok(Response::new(TopReply {
            pods: if r.nodes {
                Vec::new()
            } else {
                pods.into_values().collect()
            },
            nodes: vec![NodeUsage {
                name: self.settings.node.clone(),
                cpu_millicores: cpu,
                memory_bytes: mem,
                ..Default::default()
            }],
        }))
    }

    type LogsStream = BoxStream<'static, Result<Output, Status>>;
    type ExecStream = BoxStream<'static, Result<Output, Status>>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let c = self
            .find(&r.namespace, &r.name, &r.container, r.previous)
            .await?;
        let tail = u64::try_from(r.tail_lines).ok();
        let s = self
            .rt
            .logs(&c.id, r.follow, tail)
            .map(|chunk| {
                chunk
                    .map(|b| out(output::Output::Stdout(b)))
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .boxed();
        Ok(Response::new(s))
    }

    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ExecInput {
                input: Some(exec_input::Input::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "the first exec message must be start",
                ))
            }
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let c = self
            .find(&start.namespace, &start.name, &start.container, false)
            .await?;
        if !c.state.running() {
            return Err(Status::failed_precondition(format!(
                "container {:?} of pod {}/{} is not running",
                c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                start.namespace,
                start.name
            )));
        }
        let session = self
            .rt
            .exec_attached(&c.id, &start.command, start.stdin, start.tty)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut sink = session.input;
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = input.message() => m,
                };
                match m {
                    Ok(Some(ExecInput {
                        input: Some(exec_input::Input::Stdin(b)),
                    })) => {
                        if sink.write_all(&b).await.is_err() || sink.flush().await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(ExecInput {
                        input: Some(exec_input::Input::CloseStdin(_)),
                    }))
                    | Ok(None)
                    | Err(_) => {
                        let _ = sink.shutdown().await;
                        break;
                    }
                    Ok(Some(_)) => {}
                }
            }
        });
        let exit = session.exit;
        let s = session
            .output
            .map(|r| {
                r.map(|(stream, b)| match stream {
                    Stream::Stdout => out(output::Output::Stdout(b)),
                    Stream::Stderr => out(output::Output::Stderr(b)),
                })
                .map_err(|e| Status::internal(e.to_string()))
            })
            .chain(futures::stream::once(async move {
                exit.await
                    .map(|code| out(output::Output::ExitCode(i32::try_from(code).unwrap_or(-1))))
                    .map_err(|e| Status::internal(e.to_string()))
            }))
            .boxed();
        Ok(Response::new(s))
    }
}
