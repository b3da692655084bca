//! `bosun`: one binary for the control plane server, the PKI, cluster administration and
//! benchmarks. It only parses arguments and wires the crates together.
#![forbid(unsafe_code)]

mod cmd;
mod config;
mod connect;

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
    /// Run a control plane server (store, API).
    Server(cmd::server::Args),
    /// Make and issue certificates.
    #[command(subcommand)]
    Pki(cmd::pki::Pki),
    /// Show and change the control plane's members.
    #[command(subcommand)]
    Cluster(cmd::cluster::Cluster),
    /// Measure the store (speaks the etcd API: works against etcd too).
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default_level},openraft=warn,h2=warn,tower=warn,hyper=warn"
        ))
    });
    let is_server = matches!(cli.command, Command::Server(_));
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
            Command::Cluster(c) => cmd::cluster::run(c, cli.config.as_deref(), cli.verbose).await,
            Command::Bench(b) => cmd::bench::run(b).await,
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
