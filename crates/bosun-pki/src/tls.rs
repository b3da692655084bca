//! rustls configs and the TLS transport under tonic, on both sides.
//!
//! We terminate TLS ourselves instead of using tonic's `tls` feature: that lets every
//! listener require a client certificate, log each refused handshake with the peer's
//! address, hand the verified [`Identity`] to handlers, and (on the peer port) refuse any
//! certificate that is not a server's.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;

use crate::identity::{Identity, PeerInfo};
use crate::{io_err, Error, Result};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; more wait for a slot.
const MAX_HANDSHAKES: usize = 256;

/// The three files a TLS endpoint needs.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The cluster CA certificate (trust root for the other side).
    pub ca: PathBuf,
    /// Our certificate.
    pub cert: PathBuf,
    /// Our private key.
    pub key: PathBuf,
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.into(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.into(),
            what: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
///
/// # Errors
/// When the file cannot be read or holds no key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| Error::Pem {
        path: path.into(),
        what: format!("no private key: {e}"),
    })
}

fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| Error::Pem {
            path: ca.into(),
            what: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our certificate and key, reloaded from disk when the files change, so a renewed
/// certificate takes effect without a restart. Serves as rustls's certificate resolver on
/// both sides (server and client) of every connection.
#[derive(Debug)]
pub struct ReloadingIdentity {
    material: TlsMaterial,
    current: std::sync::RwLock<Arc<CertifiedKey>>,
    stamp: std::sync::Mutex<Option<(std::time::SystemTime, std::time::SystemTime)>>,
}

fn mtimes(m: &TlsMaterial) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let c = std::fs::metadata(&m.cert).and_then(|x| x.modified()).ok()?;
    let k = std::fs::metadata(&m.key).and_then(|x| x.modified()).ok()?;
    Some((c, k))
}

fn certified_key(m: &TlsMaterial) -> Result<CertifiedKey> {
    CertifiedKey::from_der(load_certs(&m.cert)?, load_key(&m.key)?, &provider()).map_err(Error::Tls)
}

impl ReloadingIdentity {
    /// Loads the certificate and key.
    ///
    /// # Errors
    /// When they cannot be read, or the key does not match the certificate.
    pub fn load(m: &TlsMaterial) -> Result<Arc<Self>> {
        let stamp = mtimes(m);
        let key = certified_key(m)?;
        Ok(Arc::new(ReloadingIdentity {
            material: m.clone(),
            current: std::sync::RwLock::new(Arc::new(key)),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// Reloads when either file changed since the last load. `Ok(true)` when a new
    /// certificate is now served.
    ///
    /// # Errors
    /// When the changed files cannot be used (the current certificate stays in use; a
    /// half-written pair is retried on the next call).
    pub fn reload_if_changed(&self) -> Result<bool> {
        let now = mtimes(&self.material);
        {
            let stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_none() || *stamp == now {
                return Ok(false);
            }
        }
        let key = certified_key(&self.material)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(true)
    }

    /// Who the current certificate names (None when it cannot be parsed).
    pub fn identity(&self) -> Option<Identity> {
        self.get().cert.first().and_then(Identity::from_der)
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server config that requires a client certificate signed by the cluster CA.
///
/// # Errors
/// When a file is unreadable or rustls refuses the material.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<ServerConfig>> {
    server_config_with(m, ReloadingIdentity::load(m)?)
}

/// As [`server_config`], presenting `identity` (shared with a client config, reloadable).
///
/// # Errors
/// When the CA is unreadable or rustls refuses it.
pub fn server_config_with(
    m: &TlsMaterial,
    identity: Arc<ReloadingIdentity>,
) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&m.ca)?), provider())
        .build()
        .map_err(|e| Error::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client config that trusts only the cluster CA and presents our certificate.
///
/// # Errors
/// When a file is unreadable or rustls refuses the material.
pub fn client_config(m: &TlsMaterial) -> Result<Arc<ClientConfig>> {
    client_config_with(m, ReloadingIdentity::load(m)?)
}

/// As [`client_config`], presenting `identity` (shared with a server config, reloadable).
///
/// # Errors
/// When the CA is unreadable or rustls refuses it.
pub fn client_config_with(
    m: &TlsMaterial,
    identity: Arc<ReloadingIdentity>,
) -> Result<Arc<ClientConfig>> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&m.ca)?)
        .with_client_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// One accepted, verified TLS connection, as tonic's server sees it.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    /// Told who the peer was when the connection ends (see [`TlsIncoming::closed`]).
    on_close: Option<mpsc::Sender<Identity>>,
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        if let (Some(tx), Some(id)) = (self.on_close.take(), self.info.identity.take()) {
            // Best effort: a full queue only loses a hint.
            let _ = tx.try_send(id);
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TLS listener feeding verified connections to `tonic`'s `serve_with_incoming`.
///
/// The accept loop runs in a task that ends when this stream is dropped. Refused
/// handshakes (no certificate, another CA, a non-server certificate on the peer port) are
/// logged with the remote address and dropped.
pub struct TlsIncoming {
    rx: mpsc::Receiver<io::Result<TlsConn>>,
    local: SocketAddr,
    closed: Option<mpsc::Receiver<Identity>>,
}

impl TlsIncoming {
    /// Binds `addr`. With `servers_only`, only certificates in the `system:servers` group
    /// are accepted (the peer port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        config: Arc<ServerConfig>,
        servers_only: bool,
        port_name: &'static str,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        // Only the peer port reports closed connections (failure detection).
        let (closed_tx, closed) = if servers_only {
            let (t, r) = mpsc::channel(64);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            servers_only,
            port_name,
            tx,
            closed_tx,
        ));
        Ok(TlsIncoming { rx, local, closed })
    }

    /// On a `servers_only` listener: the identities of peers whose connection ended, as
    /// a hint for failure detection (a killed process resets its connections at once).
    /// Taken once.
    pub fn closed(&mut self) -> Option<mpsc::Receiver<Identity>> {
        self.closed.take()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    servers_only: bool,
    port_name: &'static str,
    tx: mpsc::Sender<io::Result<TlsConn>>,
    closed: Option<mpsc::Sender<Identity>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(port = port_name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::warn!(port = port_name, %remote, error = %err, "tls handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(port = port_name, %remote, "tls handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(Identity::from_der);
            if servers_only && !identity.as_ref().is_some_and(Identity::is_server) {
                tracing::warn!(
                    port = port_name,
                    %remote,
                    user = identity.as_ref().map(|i| i.user.as_str()).unwrap_or("?"),
                    "refused: not a server certificate"
                );
                return;
            }
            let info = PeerInfo {
                remote: Some(remote),
                identity,
            };
            let conn = TlsConn {
                inner: tls,
                info,
                on_close: closed,
            };
            let _ = tx.send(Ok(conn)).await;
        });
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A lazily connecting tonic channel to `addr` (`host:port`, optionally with `https://`)
/// over mTLS with `config`. The server's certificate must name the host (IP SAN or DNS SAN).
///
/// # Errors
/// When the address is not a valid URI.
pub fn channel(addr: &str, config: Arc<ClientConfig>) -> Result<tonic::transport::Channel> {
    channel_named(addr, None, None, config)
}

/// As [`channel`], with connections from the local address `source` (port chosen by the
/// kernel): a server dials its peers from its own address, so they (and firewall rules)
/// see which server a connection comes from.
///
/// # Errors
/// When the address is not a valid URI.
pub fn channel_from(
    addr: &str,
    source: std::net::IpAddr,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel> {
    channel_named(addr, None, Some(source), config)
}

/// Connects to `host:port`, from `source` when given (the first resolved address of its
/// family).
async fn connect(host: &str, port: u16, source: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect((host, port)).await;
    };
    let target = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the family of {source}"),
            )
        })?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Dials agents for the API servers: mTLS with the server's own certificate, and the
/// agent's certificate must name the node (its DNS SAN), wherever the node's address is.
#[derive(Clone)]
pub struct Dialer {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

impl Dialer {
    /// A dialer presenting the certificate in `m`.
    ///
    /// # Errors
    /// When a file is unreadable or rustls refuses the material.
    pub fn new(m: &TlsMaterial) -> Result<Self> {
        Ok(Dialer {
            config: client_config(m)?,
        })
    }

    /// A lazily connecting channel to `addr` whose certificate must carry `name`.
    ///
    /// # Errors
    /// When the address is not a valid URI.
    pub fn channel(&self, addr: &str, name: &str) -> Result<tonic::transport::Channel> {
        channel_named(addr, Some(name), None, self.config.clone())
    }
}

/// As [`channel`]; with `name`, the server's certificate must carry that name instead of
/// the host of `addr`.
fn channel_named(
    addr: &str,
    name: Option<&str>,
    source: Option<std::net::IpAddr>,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel> {
    let expected = name.map(str::to_string);
    let hostport = addr
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // Between servers (a source address given) a connection whose pings go unanswered
    // for a second is closed, and the next call opens a new one: packets dropped for a
    // while (a partition) leave TCP retransmitting with an exponential back-off, and
    // such a connection can stay silent for seconds after the path is back, during
    // which two healthy servers could not elect a leader over it.
    // For the same reason a connection attempt between servers gives up after 500 ms: one
    // begun during a partition waits out SYN retransmissions (1 s, then 3 s) after the
    // path is back, and every call on the channel waits with it; the next call after
    // the give-up sends a fresh SYN.
    let (ping_every, ping_timeout, connect_within) = match source {
        Some(_) => (
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_millis(500),
        ),
        None => (
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(2),
        ),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{hostport}"))
        .map_err(|e| Error::Endpoint(addr.into(), e.to_string()))?
        .connect_timeout(connect_within)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(ping_every)
        .keep_alive_timeout(ping_timeout)
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: http::Uri| {
        let config = config.clone();
        let expected = expected.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = connect(&host, port, source).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(expected.unwrap_or(host))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
