//! `bosun pki init` and `bosun pki issue`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bosun_pki::ca::ServerSpec;
use bosun_pki::Pki as Ca;

/// PKI verbs.
#[derive(clap::Subcommand)]
pub enum Pki {
    /// Create the cluster CA, one certificate per server and an admin user certificate.
    Init {
        /// Directory to write to.
        #[arg(long)]
        dir: PathBuf,
        /// Servers as name=ip[+ip…], comma-separated (s1=127.0.0.11,s2=127.0.0.12).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// Cluster name (in the CA's name).
        #[arg(long, default_value = "bosun")]
        cluster_name: String,
    },
    /// Add a new key for Secrets at rest, in front of the old ones: restart the servers
    /// one at a time, then run `bosun secrets reencrypt -A`.
    RotateSecretsKey {
        /// The PKI directory holding secrets.key.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue one more certificate from an existing CA.
    Issue {
        /// The PKI directory holding ca.crt and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// A user certificate with this name (CN).
        #[arg(long, conflicts_with_all = ["node", "server"])]
        user: Option<String>,
        /// The user's group (O). One group per certificate.
        #[arg(long, requires = "user")]
        group: Vec<String>,
        /// A worker node certificate (CN system:node:<name>, O system:nodes).
        #[arg(long, conflicts_with = "server")]
        node: Option<String>,
        /// A server certificate, name=ip[+ip…].
        #[arg(long)]
        server: Option<String>,
    },
}

/// Runs a PKI verb.
pub fn run(p: Pki) -> Result<()> {
    match p {
        Pki::Init {
            dir,
            servers,
            cluster_name,
        } => {
            if servers.is_empty() {
                bail!("--servers is required: name=ip for each control plane server");
            }
            let specs = servers
                .iter()
                .map(|s| ServerSpec::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let ca = Ca::init(&dir, &cluster_name).context("creating the CA")?;
            println!("created CA {}", ca.layout().ca_cert().display());
            for s in &specs {
                let (c, _) = ca.issue_server(s)?;
                println!("issued server certificate {}", c.display());
            }
            let (c, _) = ca.issue_user("admin", Some("system:masters"))?;
            println!("issued admin certificate {}", c.display());
            let key = ca.layout().secrets_key();
            if key.exists() {
                println!("kept the existing Secrets encryption key {}", key.display());
            } else {
                write_private(&key, &bosun_apiserver::SecretKeys::generate_line("key1"))?;
                println!("wrote the Secrets encryption key {}", key.display());
            }
            Ok(())
        }
        Pki::RotateSecretsKey { dir } => {
            let path = bosun_pki::Layout::new(&dir).secrets_key();
            let old = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let ids: Vec<&str> = old
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let id = (1..)
                .map(|n| format!("key{n}"))
                .find(|k| !ids.contains(&k.as_str()))
                .unwrap_or_else(|| "key".into());
            let text = bosun_apiserver::SecretKeys::generate_line(&id) + &old;
            let tmp = path.with_extension("key.new");
            let _ = std::fs::remove_file(&tmp);
            write_private(&tmp, &text)?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("replacing {}", path.display()))?;
            println!(
                "added key {id} to {} (it now encrypts; the old keys still decrypt)",
                path.display()
            );
            println!("next: copy the file to every server, restart them one at a time, then run `bosun secrets reencrypt -A`");
            Ok(())
        }
        Pki::Issue {
            dir,
            user,
            group,
            node,
            server,
        } => {
            let ca =
                Ca::load(&dir).with_context(|| format!("loading the CA from {}", dir.display()))?;
            let (c, _) = match (user, node, server) {
                (Some(u), None, None) => {
                    if group.len() > 1 {
                        bail!("one --group per certificate: this version writes a single O (group) into a certificate");
                    }
                    ca.issue_user(&u, group.first().map(String::as_str))?
                }
                (None, Some(n), None) => ca.issue_node(&n)?,
                (None, None, Some(s)) => ca.issue_server(&ServerSpec::parse(&s)?)?,
                _ => bail!(
                    "say what to issue: --user NAME [--group G], --node NAME or --server NAME=IP"
                ),
            };
            println!("issued {}", c.display());
            Ok(())
        }
    }
}

/// Writes a file readable by its owner only (0600), refusing to replace an existing one.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
