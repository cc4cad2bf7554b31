//! TLS for both listeners (rustls with the ring provider): loading the certificate chain and
//! key from PEM files, and a listener for axum that completes handshakes off the accept loop.

/// Makes ring the process's rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
