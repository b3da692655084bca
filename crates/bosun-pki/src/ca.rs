//! The cluster CA and certificate issuance (`bosun pki init`, `bosun pki issue`).
//!
//! Layout of a PKI directory:
//!
//! ```text
//! ca.crt ca.key                      the cluster CA (key 0600)
//! servers/<name>.crt, .key           one per control-plane server (group system:servers)
//! nodes/<name>.crt, .key             one per worker (CN system:node:<name>, O system:nodes)
//! users/<name>.crt, .key             people and tools (CN <name>, O <group>)
//! ```

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::SERVERS_GROUP;
use crate::{io_err, Error, Result};

/// Validity of issued certificates, in days.
const LEAF_DAYS: i64 = 825;
/// Validity of the CA, in days.
const CA_DAYS: i64 = 3650;

/// Paths inside a PKI directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The PKI directory.
    pub dir: PathBuf,
}

impl Layout {
    /// A layout rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Layout { dir: dir.into() }
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The keys that encrypt Secrets at rest (AES-256-GCM, `<id> <base64>` per line, the
    /// first one encrypts).
    pub fn secrets_key(&self) -> PathBuf {
        self.dir.join("secrets.key")
    }
    /// Certificate and key of a server.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        self.pair("servers", name)
    }
    /// Certificate and key of a worker node.
    pub fn node(&self, name: &str) -> (PathBuf, PathBuf) {
        self.pair("nodes", name)
    }
    /// Certificate and key of a user.
    pub fn user(&self, name: &str) -> (PathBuf, PathBuf) {
        self.pair("users", name)
    }
    fn pair(&self, kind: &str, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join(kind);
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
    }
}

/// A loaded CA that can issue certificates.
pub struct Pki {
    layout: Layout,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A server to issue a certificate for: its name and the addresses it is reached at.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Server name (also a DNS SAN).
    pub name: String,
    /// IP addresses (SANs).
    pub addrs: Vec<IpAddr>,
}

impl ServerSpec {
    /// Parses `name=ip[+ip…]`.
    ///
    /// # Errors
    /// When the name is invalid or an address does not parse.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, addrs) = s.split_once('=').ok_or_else(|| Error::Invalid {
            what: "server",
            value: s.into(),
            why: "expected name=address",
        })?;
        check_name("server name", name)?;
        let addrs = addrs
            .split('+')
            .map(|a| {
                a.parse::<IpAddr>().map_err(|_| Error::Invalid {
                    what: "server address",
                    value: a.into(),
                    why: "not an IP address",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ServerSpec {
            name: name.into(),
            addrs,
        })
    }
}

/// Names of servers, nodes and users: DNS-1123 labels (lowercase alphanumerics and '-',
/// at most 63 characters), so they are safe as file names and certificate CNs.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what,
            value: name.into(),
            why: "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
        })
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date a little so that small clock differences between hosts do not matter.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Writes `contents` to `path`, creating parent directories; keys are written 0600 from the
/// start (never world-readable, even briefly).
fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

impl Pki {
    /// Creates a new CA in `dir` (`bosun pki init`).
    ///
    /// # Errors
    /// [`Error::CaExists`] when `dir/ca.key` or `dir/ca.crt` exists: an existing CA is never
    /// overwritten. IO and certificate errors otherwise.
    pub fn init(dir: impl Into<PathBuf>, cluster_name: &str) -> Result<Self> {
        let layout = Layout::new(dir);
        for p in [layout.ca_key(), layout.ca_cert()] {
            if p.exists() {
                return Err(Error::CaExists(p));
            }
        }
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("bosun-ca {cluster_name}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS);
        let ca_cert = params.self_signed(&ca_key)?;
        write_file(&layout.ca_key(), &ca_key.serialize_pem(), true)?;
        write_file(&layout.ca_cert(), &ca_cert.pem(), false)?;
        Ok(Pki {
            layout,
            ca_cert,
            ca_key,
        })
    }

    /// Loads the CA in `dir` to issue more certificates (`bosun pki issue`).
    ///
    /// # Errors
    /// When the CA files are missing or unreadable.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self> {
        let layout = Layout::new(dir);
        let key_pem = read_file(&layout.ca_key())?;
        let cert_pem = read_file(&layout.ca_cert())?;
        let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
            path: layout.ca_key(),
            what: e.to_string(),
        })?;
        let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| Error::Pem {
            path: layout.ca_cert(),
            what: e.to_string(),
        })?;
        // Re-signing the CA's own parameters with its key gives an issuer with the same
        // subject and key: certificates it signs chain to the CA file on disk.
        let ca_cert = params.self_signed(&ca_key)?;
        Ok(Pki {
            layout,
            ca_cert,
            ca_key,
        })
    }

    /// The directory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn issue(
        &self,
        cert_path: &Path,
        key_path: &Path,
        cn: &str,
        group: Option<&str>,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<()> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if let Some(g) = group {
            dn.push(DnType::OrganizationName, g);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        validity(&mut params, LEAF_DAYS);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        write_file(key_path, &key.serialize_pem(), true)?;
        write_file(cert_path, &cert.pem(), false)?;
        Ok(())
    }

    /// Issues a server certificate: CN `system:server:<name>`, O `system:servers`, SANs the
    /// name, `localhost` and the given addresses; usable as TLS server and client.
    ///
    /// # Errors
    /// Invalid name, IO or certificate errors.
    pub fn issue_server(&self, spec: &ServerSpec) -> Result<(PathBuf, PathBuf)> {
        check_name("server name", &spec.name)?;
        let (c, k) = self.layout.server(&spec.name);
        let mut sans = vec![
            SanType::DnsName(dns(&spec.name)?),
            SanType::DnsName(dns("localhost")?),
        ];
        sans.extend(spec.addrs.iter().map(|a| SanType::IpAddress(*a)));
        self.issue(
            &c,
            &k,
            &format!("system:server:{}", spec.name),
            Some(SERVERS_GROUP),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        Ok((c, k))
    }

    /// Issues a worker node certificate: CN `system:node:<name>`, O `system:nodes`.
    ///
    /// # Errors
    /// Invalid name, IO or certificate errors.
    pub fn issue_node(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        check_name("node name", name)?;
        let (c, k) = self.layout.node(name);
        self.issue(
            &c,
            &k,
            &format!("system:node:{name}"),
            Some("system:nodes"),
            vec![SanType::DnsName(dns(name)?)],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        Ok((c, k))
    }

    /// Issues a user certificate: CN `<name>`, O `<group>` when given.
    ///
    /// # Errors
    /// Invalid name or group (the `system:servers` and `system:nodes` groups are reserved
    /// for `issue_server`/`issue_node`), IO or certificate errors.
    pub fn issue_user(&self, name: &str, group: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        check_name("user name", name)?;
        if let Some(g) = group {
            if g == SERVERS_GROUP || g == "system:nodes" {
                return Err(Error::Invalid {
                    what: "group",
                    value: g.into(),
                    why: "reserved for server and node certificates",
                });
            }
            if g.is_empty() || g.len() > 128 || g.chars().any(|c| c.is_control()) {
                return Err(Error::Invalid {
                    what: "group",
                    value: g.into(),
                    why: "must be 1-128 printable characters",
                });
            }
        }
        let (c, k) = self.layout.user(name);
        self.issue(
            &c,
            &k,
            name,
            group,
            vec![],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok((c, k))
    }
}

fn dns(name: &str) -> Result<rcgen::Ia5String> {
    rcgen::Ia5String::try_from(name).map_err(Error::Cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_to_overwrite_an_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        Pki::init(dir.path(), "t").unwrap();
        let err = Pki::init(dir.path(), "t").err().unwrap();
        assert!(matches!(err, Error::CaExists(_)), "{err}");
    }

    #[test]
    fn keys_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path(), "t").unwrap();
        let (_, key) = pki.issue_user("alice", Some("dev")).unwrap();
        for k in [key, pki.layout().ca_key()] {
            let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", k.display());
        }
    }

    #[test]
    fn issued_certificates_carry_user_and_group() {
        let dir = tempfile::tempdir().unwrap();
        Pki::init(dir.path(), "t").unwrap();
        let pki = Pki::load(dir.path()).unwrap();
        let (crt, _) = pki.issue_user("alice", Some("dev")).unwrap();
        let (srv, _) = pki
            .issue_server(&ServerSpec::parse("s1=127.0.0.11").unwrap())
            .unwrap();
        let id = crate::tls::load_certs(&crt).unwrap();
        let id = crate::Identity::from_der(&id[0]).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["dev".to_string()]);
        assert!(!id.is_server());
        let s = crate::tls::load_certs(&srv).unwrap();
        assert!(crate::Identity::from_der(&s[0]).unwrap().is_server());
    }

    #[test]
    fn invalid_names_and_reserved_groups_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path(), "t").unwrap();
        assert!(pki.issue_user("Alice", None).is_err());
        assert!(pki.issue_user("../x", None).is_err());
        assert!(pki.issue_user("bob", Some(SERVERS_GROUP)).is_err());
        assert!(ServerSpec::parse("s1=not-an-ip").is_err());
        assert!(ServerSpec::parse("s1").is_err());
    }
}
