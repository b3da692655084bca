//! `bosun`: one binary for the control plane server, the PKI, cluster administration and
//! benchmarks. It only parses arguments and wires the crates together.
#![forbid(unsafe_code)]

mod cmd;
mod config;
mod connect;
mod print;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// bosun: a container orchestrator with a Raft-replicated control plane.
#[derive(Parser)]
#[command(name = "bosun", version, about, long_about = None)]
struct Cli {
    /// Client config (default: $BOSUN_CONFIG, then ~/.bosun/config).
    #[arg(long, global = true, env = "BOSUN_CONFIG")]
    config: Option<PathBuf>,
    /// Say which server answered, and log more.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control plane server (store, API, and on the leader the scheduler and
    /// controllers).
    Server(cmd::server::Args),
    /// Run a worker agent: pods as Docker containers (--config FILE), or hollow nodes.
    Agent(cmd::agent::Args),
    /// Make and issue certificates.
    #[command(subcommand)]
    Pki(cmd::pki::Pki),
    /// Show and change the control plane's members.
    #[command(subcommand)]
    Cluster(cmd::cluster::Cluster),
    /// Measure the store (speaks the etcd API: works against etcd too).
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Create or update objects from Kubernetes manifests (files, directories, stdin).
    Apply(cmd::objects::ApplyArgs),
    /// List objects, or show some, as a table, YAML or JSON; -w streams changes.
    Get(cmd::objects::GetArgs),
    /// Show objects in detail, with their recent events.
    Describe(cmd::objects::DescribeArgs),
    /// Delete objects by name, selector or manifest.
    Delete(cmd::objects::DeleteArgs),
    /// Set the replica count of a Deployment or ReplicaSet.
    Scale(cmd::workloads::ScaleArgs),
    /// Change fields of workloads (images).
    #[command(subcommand)]
    Set(cmd::workloads::Set),
    /// Follow, list and undo Deployment rollouts.
    #[command(subcommand)]
    Rollout(cmd::workloads::Rollout),
    /// Print a container's output.
    Logs(cmd::io::LogsArgs),
    /// Run a command in a container.
    Exec(cmd::io::ExecArgs),
    /// cpu and memory of pods or nodes.
    #[command(subcommand)]
    Top(cmd::io::Top),
    /// Mark a node unschedulable.
    Cordon(cmd::workloads::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(cmd::workloads::NodeArgs),
    /// Cordon a node and move its pods elsewhere.
    Drain(cmd::workloads::NodeArgs),
    /// Inspect authorization.
    #[command(subcommand)]
    Auth(cmd::objects::Auth),
    /// Manage Secrets at rest.
    #[command(subcommand)]
    Secrets(cmd::objects::Secrets),
    /// Print a shell completion script (bash, zsh, fish, …).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Every Rust allocation of the servers, agents and CLI goes through mimalloc: the
/// servers allocate and free many small buffers per request (gRPC frames, JSON values),
/// where glibc's malloc spent 8-20 % of their CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `bosun get pods | head`: when whoever reads the CLI's output goes away, end quietly
/// with status 141 (a shell tool's "killed by SIGPIPE") instead of a panic report. Rust
/// ignores SIGPIPE, so a write to the closed pipe fails, and `println!` (and clap's
/// completion writer) panic on that failure; this hook tells that panic from others.
fn quiet_when_stdout_closes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(141);
        }
        report(info)
    }));
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default_level},openraft=warn,h2=warn,tower=warn,hyper=warn"
        ))
    });
    let is_server = matches!(cli.command, Command::Server(_) | Command::Agent(_));
    if !is_server {
        quiet_when_stdout_closes();
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if is_server {
        builder.init();
    } else {
        builder.without_time().with_target(false).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = runtime.block_on(async move {
        match cli.command {
            Command::Server(a) => cmd::server::run(a).await,
            Command::Pki(p) => cmd::pki::run(p),
            Command::Agent(a) => cmd::agent::run(a, cli.config.as_deref()).await,
            Command::Cluster(c) => cmd::cluster::run(c, cli.config.as_deref(), cli.verbose).await,
            Command::Bench(b) => cmd::bench::run(b, cli.config.as_deref()).await,
            Command::Apply(a) => cmd::objects::apply(a, cli.config.as_deref(), cli.verbose).await,
            Command::Get(g) => cmd::objects::get(g, cli.config.as_deref(), cli.verbose).await,
            Command::Describe(d) => {
                cmd::objects::describe(d, cli.config.as_deref(), cli.verbose).await
            }
            Command::Delete(d) => cmd::objects::delete(d, cli.config.as_deref(), cli.verbose).await,
            Command::Auth(a) => match cmd::objects::auth(a, cli.config.as_deref()).await {
                Ok(true) => Ok(()),
                Ok(false) => return Ok(Some(1)),
                Err(e) => Err(e),
            },
            Command::Logs(a) => cmd::io::logs(a, cli.config.as_deref()).await,
            Command::Top(t) => cmd::io::top(t, cli.config.as_deref()).await,
            Command::Exec(a) => match cmd::io::exec(a, cli.config.as_deref()).await {
                Ok(0) => Ok(()),
                // The command's own exit code, as kubectl exec passes it on.
                Ok(code) => return Ok(Some(u8::try_from(code).unwrap_or(1))),
                Err(e) => Err(e),
            },
            Command::Scale(a) => cmd::workloads::scale(a, cli.config.as_deref()).await,
            Command::Set(a) => cmd::workloads::set(a, cli.config.as_deref()).await,
            Command::Rollout(r) => cmd::workloads::rollout(r, cli.config.as_deref()).await,
            Command::Cordon(a) => cmd::workloads::cordon(a, true, cli.config.as_deref()).await,
            Command::Uncordon(a) => cmd::workloads::cordon(a, false, cli.config.as_deref()).await,
            Command::Drain(a) => cmd::workloads::drain(a, cli.config.as_deref()).await,
            Command::Secrets(s) => {
                cmd::objects::secrets(s, cli.config.as_deref(), cli.verbose).await
            }
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "bosun",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
        .map(|()| None)
    });
    match res {
        Ok(None) => std::process::ExitCode::SUCCESS,
        // A "no" answer (auth can-i), or exec's command's exit code: nothing more to say.
        Ok(Some(code)) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
