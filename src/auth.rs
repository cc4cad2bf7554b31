//! Token verification for both WebSocket paths: a static key (HS* secret or PEM public key),
//! or a JWKS from a file or URL. The JWKS is fetched at start (start-up fails if it cannot be
//! had), refreshed every `jwks_refresh_ms`, and refetched when a token names an unknown `kid`,
//! at most once per `jwks_min_refetch_ms`. A failed fetch keeps the last good set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::clock::now_ms;
use crate::config::{Config, ConfigError};
use crate::core::claims::{AuthError, Identity, KeyMaterial, KeySet, Verifier, VerifierConfig};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub struct Authenticator {
    verifier: Verifier,
    jwks: Option<Jwks>,
}

enum Source {
    File(String),
    Url(String),
}

struct Jwks {
    source: Source,
    algorithm: jsonwebtoken::Algorithm,
    keys: RwLock<Arc<KeySet>>,
    client: HttpClient,
    timeout: Duration,
    min_refetch: Duration,
    refresh: Duration,
    /// When the last fetch was tried (successful or not); held while fetching.
    last_fetch: tokio::sync::Mutex<Instant>,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

impl Authenticator {
    /// Builds the verifier; with a JWKS, fetches it once (an error names the key at fault).
    pub async fn new(config: &Config, cfg: VerifierConfig) -> Result<Self, ConfigError> {
        let verifier = Verifier::new(&cfg).map_err(|e| err("jwt", e.0))?;
        let j = &config.jwt;
        let jwks = match cfg.key {
            KeyMaterial::Jwks => {
                crate::tls::install_crypto_provider();
                let (source, key) = if j.jwks_file.is_empty() {
                    (Source::Url(j.jwks_url.clone()), "jwt.jwks_url")
                } else {
                    (Source::File(j.jwks_file.clone()), "jwt.jwks_file")
                };
                let client = http_client();
                let timeout = Duration::from_millis(j.jwks_timeout_ms);
                let first = fetch(&client, &source, timeout, cfg.algorithm)
                    .await
                    .map_err(|e| err(key, e))?;
                Some(Jwks {
                    source,
                    algorithm: cfg.algorithm,
                    keys: RwLock::new(Arc::new(first)),
                    client,
                    timeout,
                    min_refetch: Duration::from_millis(j.jwks_min_refetch_ms),
                    refresh: Duration::from_millis(j.jwks_refresh_ms),
                    last_fetch: tokio::sync::Mutex::new(Instant::now()),
                })
            }
            _ => None,
        };
        Ok(Authenticator { verifier, jwks })
    }

    /// Verifies a token now. With a JWKS, an unknown `kid` triggers one refetch (when allowed)
    /// and one more try.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(jwks) = &self.jwks else {
            return self.verifier.verify(token, now_ms());
        };
        let asked = Instant::now();
        let keys = Arc::clone(&jwks.keys.read());
        match self.verifier.verify_with(token, now_ms(), &keys) {
            Err(AuthError::UnknownKey) if jwks.refetch(asked).await => {
                let keys = Arc::clone(&jwks.keys.read());
                self.verifier.verify_with(token, now_ms(), &keys)
            }
            other => other,
        }
    }

    /// Refreshes the JWKS every `jwks_refresh_ms` until `shutdown` turns true.
    pub async fn refresh_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(jwks) = &self.jwks else { return };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(jwks.refresh) => {
                    let mut last = jwks.last_fetch.lock().await;
                    jwks.fetch_now(&mut last).await;
                }
                _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return,
            }
        }
    }
}

impl Jwks {
    /// Refetches after an unknown `kid` seen at `asked`. True when the set may now hold it:
    /// this call fetched successfully, or another one did since `asked`.
    async fn refetch(&self, asked: Instant) -> bool {
        let mut last = self.last_fetch.lock().await;
        if *last > asked {
            return true;
        }
        if last.elapsed() < self.min_refetch {
            return false;
        }
        self.fetch_now(&mut last).await
    }

    async fn fetch_now(&self, last: &mut Instant) -> bool {
        *last = Instant::now();
        match fetch(&self.client, &self.source, self.timeout, self.algorithm).await {
            Ok(set) => {
                tracing::debug!(keys = set.len(), "JWKS refreshed");
                *self.keys.write() = Arc::new(set);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; keeping the last good key set");
                false
            }
        }
    }
}

/// The HTTP(S) client for JWKS URLs: hyper's, with rustls and the system's root certificates.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

fn http_client() -> HttpClient {
    crate::tls::install_crypto_provider();
    let roots = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            // Only https URLs need them; an http URL (or a file) still works.
            tracing::warn!(error = %e, "no system root certificates: https JWKS URLs will fail");
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    let https = roots.https_or_http().enable_http1().build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

async fn fetch(
    client: &HttpClient,
    source: &Source,
    timeout: Duration,
    algorithm: jsonwebtoken::Algorithm,
) -> Result<KeySet, String> {
    let body = match source {
        Source::File(path) => tokio::time::timeout(timeout, tokio::fs::read(path))
            .await
            .map_err(|_| format!("reading {path} timed out"))?
            .map_err(|e| format!("cannot read {path}: {e}"))?,
        Source::Url(url) => tokio::time::timeout(timeout, get(client, url))
            .await
            .map_err(|_| format!("fetching {url} timed out"))??,
    };
    KeySet::from_jwks(&body, algorithm).map_err(|e| e.0)
}

/// An error and its causes, `a: b: c` (hyper's own message alone says only "client error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// GET `url`: a 2xx body of at most [`MAX_JWKS_BYTES`].
async fn get(client: &HttpClient, url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    let resp = client
        .get(uri)
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                format!("{url}: the JWKS is over {MAX_JWKS_BYTES} bytes")
            } else {
                format!("cannot read {url}: {e}")
            }
        })?;
    Ok(body.to_bytes().to_vec())
}
