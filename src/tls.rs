//! TLS for both listeners (rustls with the ring provider): loading a certificate chain and key
//! from PEM files, and an axum listener whose handshakes run in their own tasks (with a
//! timeout), so a slow or silent client never holds up the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum to take them.
const READY_BACKLOG: usize = 1024;

/// Makes ring the process's rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and private key, read from PEM files (errors name the config key).
pub struct PemIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Why a PEM file could not be used: `key` is the configuration key that names the file
/// (`tls_cert_file` or `tls_key_file`; the caller adds the section).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PemError {
    pub key: &'static str,
    pub message: String,
}

/// Reads and checks `cert_file` and `key_file`.
pub fn load_identity(cert_file: &str, key_file: &str) -> Result<PemIdentity, PemError> {
    let err = |key: &'static str, message: String| PemError { key, message };
    let cert_pem = std::fs::read(cert_file)
        .map_err(|e| err("tls_cert_file", format!("cannot read {cert_file}: {e}")))?;
    let key_pem = std::fs::read(key_file)
        .map_err(|e| err("tls_key_file", format!("cannot read {key_file}: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "tls_cert_file",
                format!("{cert_file} is not PEM certificates: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "tls_cert_file",
            format!("{cert_file} holds no certificate"),
        ));
    }
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            "tls_key_file",
            format!("{key_file} is not a PEM private key: {e}"),
        )
    })?;
    Ok(PemIdentity { cert_pem, key_pem })
}

/// A rustls server configuration for HTTP/1.1 (the WebSocket listener); an error names what
/// is wrong with the certificate (the caller names the key).
pub fn http_server_config(id: &PemIdentity) -> Result<Arc<rustls::ServerConfig>, String> {
    install_crypto_provider();
    let err = |message: String| message;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&id.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&id.key_pem).map_err(|e| err(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(format!(
                "the certificate and key do not make a TLS identity: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The peer address of an HTTP connection, plain or TLS (for `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The plain HTTP listener: every accepted connection gets TCP_NODELAY, so that a frame
/// written while an earlier one is unacknowledged is not held for the peer's delayed ACK
/// (the session task coalesces frames itself before each write).
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A TLS listener for axum: a task accepts TCP connections and hands each to its own
/// handshake task; finished handshakes queue here. It stops accepting at shutdown.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return,
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The acceptor stopped (shutdown): never yield again; axum is stopping too.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
