//! `bosun logs`, `bosun exec` and `bosun top`: container I/O and usage through the API
//! server, which checks RBAC (pods/log, pods/exec, list) and relays to the agents.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use bosun_api::resources::{exec_input, output, ExecInput, ExecStart, LogsRequest, TopRequest};
use bosun_client::Client;
use futures::StreamExt;

use crate::config::ClientConfig;

/// Arguments of `bosun logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The pod (or `pod/NAME`).
    pod: String,
    /// The container (default: the pod's only container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Namespace (default: the config's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Stream new output until interrupted or the container ends.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<i64>,
    /// The previous instance of the container (after a restart).
    #[arg(short = 'p', long)]
    previous: bool,
}

/// Arguments of `bosun exec`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// The pod (or `pod/NAME`).
    pod: String,
    /// The container (default: the pod's only container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Namespace (default: the config's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a terminal (needs a terminal here too).
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn pod_name(p: &str) -> &str {
    p.strip_prefix("pod/")
        .or_else(|| p.strip_prefix("pods/"))
        .unwrap_or(p)
}

fn connect(config: Option<&Path>) -> Result<(Client, ClientConfig)> {
    let cfg = ClientConfig::find(config)?;
    Ok((Client::connect(&cfg.servers, &cfg.tls())?, cfg))
}

/// `bosun logs`.
pub async fn logs(a: LogsArgs, config: Option<&Path>) -> Result<()> {
    let (client, cfg) = connect(config)?;
    let ns = a.namespace.unwrap_or(cfg.namespace);
    let name = pod_name(&a.pod).to_string();
    let req = LogsRequest {
        namespace: ns.clone(),
        name: name.clone(),
        container: a.container.unwrap_or_default(),
        follow: a.follow,
        tail_lines: a.tail.unwrap_or(-1),
        previous: a.previous,
    };
    let mut s = Box::pin(
        client
            .logs(req)
            .await
            .with_context(|| format!("logs of pod {ns}/{name}"))?,
    );
    let mut out = std::io::stdout();
    while let Some(m) = s.next().await {
        let m = m.with_context(|| format!("logs of pod {ns}/{name}"))?;
        if let Some(output::Output::Stdout(b) | output::Output::Stderr(b)) = m.output {
            out.write_all(&b)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Puts the local terminal in raw mode while alive (`stty`), restoring it on drop.
struct RawTerminal(Option<String>);

impl RawTerminal {
    fn enter() -> Self {
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if saved.is_some() {
            let _ = std::process::Command::new("stty")
                .args(["raw", "-echo"])
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        RawTerminal(saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            let _ = std::process::Command::new("stty")
                .arg(s)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// `bosun exec`: returns the command's exit code.
pub async fn exec(a: ExecArgs, config: Option<&Path>) -> Result<i32> {
    let (client, cfg) = connect(config)?;
    let ns = a.namespace.unwrap_or(cfg.namespace);
    let name = pod_name(&a.pod).to_string();
    if a.tty && !std::io::stdin().is_terminal() {
        bail!("-t needs a terminal on standard input (use -i alone to pipe input)");
    }
    let start = ExecStart {
        namespace: ns.clone(),
        name: name.clone(),
        container: a.container.unwrap_or_default(),
        command: a.command,
        stdin: a.stdin,
        tty: a.tty,
    };
    // Standard input, read on a thread (blocking reads), at most 32 chunks queued.
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(32);
    if a.stdin {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(ExecInput {
                            input: Some(exec_input::Input::CloseStdin(true)),
                        });
                        return;
                    }
                    Ok(n) => {
                        let m = ExecInput {
                            input: Some(exec_input::Input::Stdin(buf[..n].to_vec())),
                        };
                        if tx.blocking_send(m).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    let _raw = a.tty.then(RawTerminal::enter);
    let mut s = Box::pin(
        client
            .exec(start, tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .with_context(|| format!("exec in pod {ns}/{name}"))?,
    );
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut code = None;
    while let Some(m) = s.next().await {
        match m
            .with_context(|| format!("exec in pod {ns}/{name}"))?
            .output
        {
            Some(output::Output::Stdout(b)) => {
                out.write_all(&b)?;
                out.flush()?;
            }
            Some(output::Output::Stderr(b)) => {
                err.write_all(&b)?;
                err.flush()?;
            }
            Some(output::Output::ExitCode(c)) => code = Some(c),
            None => {}
        }
    }
    code.context("the exec ended without an exit code (the agent or server went away)")
}

/// `bosun top pods|nodes`.
#[derive(clap::Subcommand)]
pub enum Top {
    /// cpu and memory of each pod.
    #[command(alias = "pod", alias = "po")]
    Pods {
        /// Namespace (default: the config's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// One row per container.
        #[arg(long)]
        containers: bool,
    },
    /// cpu and memory used by each node's pods.
    #[command(alias = "node", alias = "no")]
    Nodes,
}

/// A cpu amount as kubectl top prints it (`12m`).
fn cores(milli: i64) -> String {
    format!("{milli}m")
}

/// A memory amount as kubectl top prints it (`12Mi`).
fn mebibytes(bytes: i64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

fn percent(used: i64, of: i64) -> String {
    if of > 0 {
        format!("{}%", used * 100 / of)
    } else {
        "<unknown>".into()
    }
}

fn table(rows: Vec<Vec<String>>) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// `bosun top`.
pub async fn top(t: Top, config: Option<&Path>) -> Result<()> {
    let (client, cfg) = connect(config)?;
    match t {
        Top::Nodes => {
            let r = client
                .top(TopRequest {
                    nodes: true,
                    ..Default::default()
                })
                .await
                .context("node usage")?;
            let mut rows = vec![vec![
                "NAME".into(),
                "CPU(cores)".into(),
                "CPU%".into(),
                "MEMORY(bytes)".into(),
                "MEMORY%".into(),
            ]];
            for n in &r.nodes {
                if n.error.is_empty() {
                    rows.push(vec![
                        n.name.clone(),
                        cores(n.cpu_millicores),
                        percent(n.cpu_millicores, n.cpu_allocatable_millicores),
                        mebibytes(n.memory_bytes),
                        percent(n.memory_bytes, n.memory_allocatable_bytes),
                    ]);
                } else {
                    rows.push(vec![
                        n.name.clone(),
                        "<unknown>".into(),
                        "<unknown>".into(),
                        "<unknown>".into(),
                        "<unknown>".into(),
                    ]);
                    eprintln!("node {}: {}", n.name, n.error);
                }
            }
            table(rows);
        }
        Top::Pods {
            namespace,
            all_namespaces,
            containers,
        } => {
            let ns = namespace.unwrap_or(cfg.namespace);
            let r = client
                .top(TopRequest {
                    namespace: ns.clone(),
                    all_namespaces,
                    nodes: false,
                })
                .await
                .context("pod usage")?;
            for n in r.nodes.iter().filter(|n| !n.error.is_empty()) {
                eprintln!("node {}: {}", n.name, n.error);
            }
            if r.pods.is_empty() {
                if all_namespaces {
                    println!("No running pods found");
                } else {
                    println!("No running pods found in {ns} namespace.");
                }
                return Ok(());
            }
            let mut head = Vec::new();
            if all_namespaces {
                head.push("NAMESPACE".to_string());
            }
            head.push("NAME".into());
            if containers {
                head.push("CONTAINER".into());
            }
            head.extend(["CPU(cores)".to_string(), "MEMORY(bytes)".to_string()]);
            let mut rows = vec![head];
            for p in &r.pods {
                let lead = |row: &mut Vec<String>| {
                    if all_namespaces {
                        row.push(p.namespace.clone());
                    }
                    row.push(p.name.clone());
                };
                if containers {
                    for c in &p.containers {
                        let mut row = Vec::new();
                        lead(&mut row);
                        row.extend([
                            c.name.clone(),
                            cores(c.cpu_millicores),
                            mebibytes(c.memory_bytes),
                        ]);
                        rows.push(row);
                    }
                } else {
                    let mut row = Vec::new();
                    lead(&mut row);
                    let cpu: i64 = p.containers.iter().map(|c| c.cpu_millicores).sum();
                    let mem: i64 = p.containers.iter().map(|c| c.memory_bytes).sum();
                    row.extend([cores(cpu), mebibytes(mem)]);
                    rows.push(row);
                }
            }
            table(rows);
        }
    }
    Ok(())
}
