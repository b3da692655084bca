//! `bosun cluster status|add-member|remove-member`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use bosun_api::admin::admin_client::AdminClient;
use bosun_api::admin::*;

use crate::config::ClientConfig;
use crate::connect::Servers;

/// Cluster verbs.
#[derive(clap::Subcommand)]
pub enum Cluster {
    /// Members, leader, term, commit and applied index, and health of each server.
    Status,
    /// Add a server: it joins as a learner, catches up, then becomes a voter.
    AddMember {
        /// The new server's name.
        name: String,
        /// Its IP address.
        #[arg(long)]
        address: String,
        /// Raft id (default: one above the highest member id).
        #[arg(long)]
        id: Option<u64>,
        /// Peer port.
        #[arg(long, default_value_t = 2380)]
        peer_port: u16,
        /// Client port.
        #[arg(long, default_value_t = 2379)]
        client_port: u16,
        /// Leave it a learner (non-voting).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a server from the cluster.
    RemoveMember {
        /// Its name.
        name: String,
    },
}

async fn statuses(servers: &Servers) -> Vec<(String, Result<StatusResponse, tonic::Status>)> {
    let mut out = Vec::new();
    for (addr, ch) in &servers.channels {
        let mut c = AdminClient::new(ch.clone());
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            c.status(StatusRequest {}),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("timed out")))
        .map(|r| r.into_inner());
        out.push((addr.clone(), r));
    }
    out
}

/// Finds the leader's channel among the configured servers.
async fn leader(servers: &Servers) -> Result<(String, tonic::transport::Channel)> {
    for (addr, st) in statuses(servers).await {
        if let Ok(s) = st {
            if s.has_leader && s.leader_id == s.id {
                if let Some((a, ch)) = servers.channels.iter().find(|(a, _)| *a == addr) {
                    return Ok((a.clone(), ch.clone()));
                }
            }
        }
    }
    bail!("no configured server is the leader (is a majority of the cluster up?)")
}

/// Runs a cluster verb.
pub async fn run(c: Cluster, config: Option<&Path>, verbose: bool) -> Result<()> {
    let cfg = ClientConfig::find(config)?;
    let servers = Servers::new(&cfg.servers, &cfg.tls())?;
    match c {
        Cluster::Status => {
            let all = statuses(&servers).await;
            println!(
                "{:<8} {:<6} {:<22} {:<10} {:>6} {:>10} {:>10} {:>10} {:>10}  HEALTH",
                "NAME",
                "ID",
                "ADDRESS",
                "ROLE",
                "TERM",
                "LAST-LOG",
                "COMMIT",
                "APPLIED",
                "REVISION"
            );
            let mut leader_members = None;
            let mut leader_at: Option<(String, u64)> = None;
            let mut healthy = 0;
            for (addr, st) in &all {
                match st {
                    Ok(s) => {
                        let role = if s.has_leader && s.leader_id == s.id { "leader".to_string() } else { s.state.to_lowercase() };
                        let health = if s.has_leader { "ok" } else { "no leader" };
                        if s.has_leader {
                            healthy += 1;
                        }
                        println!(
                            "{:<8} {:<6} {:<22} {:<10} {:>6} {:>10} {:>10} {:>10} {:>10}  {health}",
                            s.name, s.id, addr, role, s.term, s.last_log_index, s.commit_index, s.applied_index, s.revision
                        );
                        if s.leader_id == s.id {
                            leader_members = Some(s.members.clone());
                            leader_at = Some((s.name.clone(), s.term));
                        }
                    }
                    Err(e) => println!("{:<8} {:<6} {:<22} {:<10} {:>6} {:>10} {:>10} {:>10} {:>10}  unreachable: {}", "?", "?", addr, "-", "-", "-", "-", "-", "-", e.message()),
                }
            }
            if let Some(members) = leader_members {
                println!("\nmembers (as the leader sees them):");
                for m in members {
                    let role = if m.learner { "learner" } else { "voter" };
                    let matched = if m.has_matched {
                        m.matched_index.to_string()
                    } else {
                        "-".into()
                    };
                    println!(
                        "  {:<8} id={:<4} {role:<8} peer={:<22} client={:<22} matched={matched}",
                        m.name, m.id, m.peer_addr, m.client_addr
                    );
                }
                if let Some((name, term)) = &leader_at {
                    println!("\nscheduler and controllers: on the leader, {name} (term {term}; stopped on any other server)");
                }
            }
            if healthy == 0 {
                bail!("no server reports a leader");
            }
            Ok(())
        }
        Cluster::AddMember {
            name,
            address,
            id,
            peer_port,
            client_port,
            learner,
        } => {
            let ip: std::net::IpAddr = address
                .parse()
                .with_context(|| format!("--address {address:?} is not an IP address"))?;
            let (addr, ch) = leader(&servers).await?;
            let mut client = AdminClient::new(ch);
            let id = match id {
                Some(i) => i,
                None => {
                    let st = client.status(StatusRequest {}).await?.into_inner();
                    st.members.iter().map(|m| m.id).max().unwrap_or(0) + 1
                }
            };
            if verbose {
                eprintln!("leader {addr} adds {name} (id {id})");
            }
            let req = AddMemberRequest {
                name: name.clone(),
                id,
                peer_addr: std::net::SocketAddr::new(ip, peer_port).to_string(),
                client_addr: std::net::SocketAddr::new(ip, client_port).to_string(),
                promote: !learner,
            };
            let resp = client
                .add_member(req)
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            println!(
                "added {name} (id {id}) as {}",
                if learner { "learner" } else { "voter" }
            );
            for m in resp.members {
                println!(
                    "  {:<8} id={:<4} {}",
                    m.name,
                    m.id,
                    if m.learner { "learner" } else { "voter" }
                );
            }
            Ok(())
        }
        Cluster::RemoveMember { name } => {
            let (_, ch) = leader(&servers).await?;
            let mut client = AdminClient::new(ch);
            let resp = client
                .remove_member(RemoveMemberRequest {
                    name: name.clone(),
                    id: 0,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            println!("removed {name}");
            for m in resp.members {
                println!(
                    "  {:<8} id={:<4} {}",
                    m.name,
                    m.id,
                    if m.learner { "learner" } else { "voter" }
                );
            }
            Ok(())
        }
    }
}
