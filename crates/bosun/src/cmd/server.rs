//! `bosun server`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;

/// Arguments of `bosun server`.
#[derive(clap::Args)]
pub struct Args {
    /// Server config file (TOML; see config/examples/server.toml).
    #[arg(long = "server-config", visible_alias = "cfg", short = 'c')]
    server_config: PathBuf,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    let cfg = ServerConfig::load(&args.server_config)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        stop.cancel();
    });
    tracing::info!(name = %cfg.name, id = cfg.id, dir = %cfg.data_dir.display(), "starting server");
    let api = cfg.api()?;
    let timing = bosun_controllers::nodelifecycle::Timing {
        grace: std::time::Duration::from_millis(cfg.controllers.node_grace_ms),
        eviction: std::time::Duration::from_millis(cfg.controllers.eviction_ms),
    };
    let extension: bosun_store::server::Extension = Box::new(move |node, channel, stop| {
        let (routes, mut tasks) = bosun_apiserver::start(node.clone(), api, stop.clone());
        // The scheduler and controllers reach the API like any client, through its gRPC
        // services, in the server's own name; in process, not over TLS on loopback.
        let own = bosun_client::Client::over("this server (in process)", channel);
        let (leadership, watcher) = node.leadership(stop.clone());
        tasks.push(watcher);
        tasks.push(tokio::spawn(bosun_controllers::leader::while_leading(
            leadership,
            stop,
            move |term, cancel| {
                let client = own.with_fence(term);
                // One watch per resource, shared by the scheduler and every controller.
                let inf = bosun_client::informer::Informers::new(client.clone(), cancel.clone());
                let c = || (client.clone(), inf.clone(), cancel.clone());
                let mut tasks = Vec::new();
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_scheduler::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::replicaset::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::deployment::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::endpoints::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::job::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::gc::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::namespace::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::daemonset::run(cl, i, x)));
                let (cl, i, x) = c();
                tasks.push(tokio::spawn(bosun_controllers::nodelifecycle::run(
                    cl, i, timing, x,
                )));
                // The shared informers end with the controllers (same cancel token).
                tasks.push(tokio::spawn(inf.join()));
                tasks
            },
        )));
        (routes, tasks)
    });
    bosun_store::server::run(cfg.node(), cfg.listen(), Some(extension), shutdown)
        .await
        .with_context(|| format!("server {}", cfg.name))
}
