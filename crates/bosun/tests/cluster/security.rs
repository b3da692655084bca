//! mTLS: connections without a client certificate, or with one from another CA, are
//! refused and logged; non-admin certificates may not use the raw store; the peer port
//! accepts only server certificates.

use std::sync::Arc;
use std::time::Duration;

use bosun_api::etcd::kv_client::KvClient;
use bosun_api::etcd::RangeRequest;
use bosun_pki::{Pki, TlsMaterial};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::util::*;

async fn handshake(addr: &str, cfg: rustls::ClientConfig) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let host = addr.split(':').next().unwrap().to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: the server checks the client certificate after the client finished; the
    // refusal arrives as an alert on the first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err("closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

fn roots(ca: &std::path::Path) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    for c in bosun_pki::tls::load_certs(ca).unwrap() {
        r.add(c).unwrap();
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_without_a_valid_client_certificate_are_refused_and_logged() {
    let c = up(3, &[]);
    let ep = c.endpoint("s1");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // No client certificate.
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&c.pki().join("ca.crt")))
        .with_no_client_auth();
    let err = handshake(&ep, cfg)
        .await
        .expect_err("no client certificate must be refused");
    assert!(!err.is_empty());
    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let pki = Pki::init(other.path(), "other").unwrap();
    let (crt, key) = pki.issue_user("admin", Some("system:masters")).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&c.pki().join("ca.crt")))
        .with_client_auth_cert(
            bosun_pki::tls::load_certs(&crt).unwrap(),
            bosun_pki::tls::load_key(&key).unwrap(),
        )
        .unwrap();
    handshake(&ep, cfg)
        .await
        .expect_err("a certificate from another CA must be refused");
    // The same through gRPC: nothing is served.
    let forged = TlsMaterial {
        ca: c.pki().join("ca.crt"),
        cert: crt,
        key,
    };
    let mut kv = KvClient::new(c.channel_as("s1", &forged).unwrap());
    assert!(kv
        .range(RangeRequest {
            key: "/x".into(),
            ..Default::default()
        })
        .await
        .is_err());
    eventually(Duration::from_secs(5), "refusals in the log", || async {
        (c.log("s1").matches("tls handshake refused").count() >= 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", c.log("s1")));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_use_the_store_and_only_servers_reach_the_peer_port() {
    let c = up(3, &[]);
    let pki = Pki::load(c.pki()).unwrap();
    let (crt, key) = pki.issue_user("alice", Some("dev")).unwrap();
    let alice = TlsMaterial {
        ca: c.pki().join("ca.crt"),
        cert: crt,
        key,
    };
    let mut kv = KvClient::new(c.channel_as("s1", &alice).unwrap());
    let err = kv
        .range(RangeRequest {
            key: "/x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("alice"), "{err}");
    // A valid CA-signed certificate that is not a server's is refused on the peer port.
    let peer = format!("{}:2380", c.ip("s1"));
    let cfg = bosun_pki::client_config(&c.admin_tls()).unwrap();
    let ch = bosun_pki::channel(&peer, cfg).unwrap();
    let mut client = bosun_api::peer::raft_peer_client::RaftPeerClient::new(ch);
    assert!(client
        .vote(bosun_api::peer::Blob { data: vec![] })
        .await
        .is_err());
    eventually(
        Duration::from_secs(5),
        "peer refusal in the log",
        || async {
            c.log("s1")
                .contains("refused: not a server certificate")
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// The certificate `sN` presents to a new connection (DER).
async fn served_certificate(c: &Cluster, name: &str) -> Option<Vec<u8>> {
    let cfg = bosun_pki::client_config(&c.admin_tls()).ok()?;
    let tcp = TcpStream::connect(c.endpoint(name)).await.ok()?;
    let server = rustls::pki_types::ServerName::try_from(c.ip(name)).ok()?;
    let tls = TlsConnector::from(cfg).connect(server, tcp).await.ok()?;
    tls.get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|d| d.as_ref().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let c = up(3, &[]);
    let before = served_certificate(&c, "s1")
        .await
        .expect("a certificate before renewal");
    let pki = Pki::load(c.pki()).unwrap();
    let spec = bosun_pki::ca::ServerSpec::parse(&format!("s1={}", c.ip("s1"))).unwrap();
    let (crt, _) = pki.issue_server(&spec).unwrap();
    let renewed = bosun_pki::tls::load_certs(&crt).unwrap()[0]
        .as_ref()
        .to_vec();
    assert_ne!(before, renewed);
    eventually(
        Duration::from_secs(15),
        "the renewed certificate served",
        || async { (served_certificate(&c, "s1").await? == renewed).then_some(()) },
    )
    .await
    .unwrap();
    // Same process, and the cluster works through s1 (peers accept its new certificate).
    assert!(c.log("s1").contains("certificate reloaded"));
    let mut kv = c.kv("s1").unwrap();
    put(&mut kv, "/renewed", "1").await.unwrap();
    assert_eq!(
        get(&mut kv, "/renewed", false).await.unwrap().as_deref(),
        Some("1")
    );
}
