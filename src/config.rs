//! Configuration: the keys and defaults of docs/configuration.md, loaded from a TOML file,
//! then `REALTIME_<SECTION>__<KEY>` environment variables, then command-line flags, each layer
//! overriding the one before. Unknown keys are refused (a typo must not silently fall back to a
//! default), and every error names the key at fault. Besides the TOML file, the only I/O here
//! is reading the files keys name (the JWT key or key set, the TLS certificates and keys),
//! once, when the configuration is validated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

use crate::core::claims::{KeyMaterial, VerifierConfig};
use crate::core::ids::validate_node_id;

/// Parses a log filter strictly: comma-separated levels (`off`, `error`, `warn`, `info`,
/// `debug`, `trace`) and `target=level` directives. Anything else is refused, naming it:
/// tracing's own parser would read `verbose` as a target name and silently log nothing.
pub fn parse_log_filter(spec: &str) -> Result<Targets, String> {
    let mut targets = Targets::new();
    let mut any = false;
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        targets = match directive.split_once('=') {
            None => targets.with_default(log_level(directive)?),
            Some((target, lvl)) => {
                let name_ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'));
                if !name_ok {
                    return Err(format!("{target:?} is not a target (a module path)"));
                }
                targets.with_target(target, log_level(lvl)?)
            }
        };
        any = true;
    }
    if !any {
        return Err("is empty; use a level such as info".into());
    }
    Ok(targets)
}

fn log_level(word: &str) -> Result<LevelFilter, String> {
    Ok(match word.trim().to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => {
            return Err(format!(
                "{word:?} is not a level (off, error, warn, info, debug, trace) or target=level"
            ))
        }
    })
}

/// Whether a secret or key still holds a placeholder of the published example file (any value
/// starting `REPLACE`): with it, anyone who read the example could mint tokens or call the API.
pub fn is_placeholder(value: &str) -> bool {
    value.starts_with("REPLACE")
}

/// Why a placeholder `jwt.secret` is refused, and what to do.
pub const PLACEHOLDER_SECRET: &str = "holds the example file's placeholder (a value starting REPLACE), which anyone can read; put a random secret of 32 bytes or more there, e.g. `openssl rand -hex 32`";

/// An invalid configuration: which key, and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    /// Further problems found in the same check (`validate` reports them all at once).
    pub more: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.more.is_empty() {
            return write!(f, "invalid configuration: {}: {}", self.key, self.message);
        }
        write!(
            f,
            "invalid configuration ({} problems):",
            self.more.len() + 1
        )?;
        for e in std::iter::once(self).chain(&self.more) {
            write!(f, "\n  {}: {}", e.key, e.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// One problem: the key at fault and what is wrong with it.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub jwt: JwtConfig,
    pub limits: LimitsConfig,
    pub topics: TopicsConfig,
    pub centrifuge: CentrifugeConfig,
    pub broker: BrokerConfig,
    pub log: LogConfig,
    pub users: UsersConfig,
    pub admin: AdminConfig,
    /// `[[consumers]]`: zero or more (protocol section 9, docs/consumers.md).
    pub consumers: Vec<ConsumerConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Empty: the host name plus a random suffix, chosen at start.
    #[serde(deserialize_with = "lenient::string")]
    pub id: String,
    pub shutdown_timeout_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            shutdown_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    #[serde(deserialize_with = "lenient::list")]
    pub allowed_origins: Vec<String>,
    /// Addition: PEM certificate chain and key; both set turns TLS on for this listener.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Addition: serve the demo page at `/demo` (on in `dev`).
    pub demo: bool,
    /// Serve the HTTP JSON API (`POST /api/v1/<Rpc>`) on this listener.
    pub api: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            allowed_origins: Vec::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            demo: false,
            api: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: String,
    /// Secrets: kept as `SecretString` (redacted in debug output, zeroed when dropped).
    #[serde(
        deserialize_with = "lenient::secret_list",
        serialize_with = "lenient::redacted_list"
    )]
    pub api_keys: Vec<SecretString>,
    pub allow_unauthenticated: bool,
    /// Events a WatchEvents stream may fall behind before it is ended with RESOURCE_EXHAUSTED
    /// (an addition to the contract's keys).
    pub watch_buffer: usize,
    /// Requests one gRPC connection may have in progress; more are refused at once with
    /// RESOURCE_EXHAUSTED (load shedding, never a queue). An addition to the contract's keys.
    pub max_concurrent_requests: usize,
    /// Addition: PEM certificate chain and key; both set turns TLS on for this listener.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: "0.0.0.0:50051".into(),
            api_keys: Vec::new(),
            allow_unauthenticated: false,
            watch_buffer: 4096,
            max_concurrent_requests: 1024,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    pub algorithm: jsonwebtoken::Algorithm,
    #[serde(
        deserialize_with = "lenient::secret",
        serialize_with = "lenient::redacted"
    )]
    pub secret: SecretString,
    pub public_key_file: String,
    pub jwks_file: String,
    pub jwks_url: String,
    #[serde(deserialize_with = "lenient::string")]
    pub issuer: String,
    #[serde(deserialize_with = "lenient::string")]
    pub audience: String,
    pub require_exp: bool,
    pub leeway_ms: u64,
    /// Additions for JWKS: refresh period, the least time between refetches on an unknown
    /// `kid`, and the fetch timeout.
    pub jwks_refresh_ms: u64,
    pub jwks_min_refetch_ms: u64,
    pub jwks_timeout_ms: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: jsonwebtoken::Algorithm::HS256,
            secret: SecretString::default(),
            public_key_file: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            require_exp: true,
            leeway_ms: 0,
            jwks_refresh_ms: 300_000,
            jwks_min_refetch_ms: 10_000,
            jwks_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub send_queue: usize,
    pub max_frame_bytes: usize,
    pub max_payload_bytes: usize,
    /// The largest PublishBatch request, in bytes.
    pub max_batch_bytes: usize,
    pub client_rate: u32,
    pub max_bad_frames: u32,
    pub max_connections_per_user: u32,
    /// Addition: sockets this node holds at most (HTTP 503 past it); 0 means the process's
    /// open-file limit minus 256.
    pub max_connections: usize,
    pub auth_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            send_queue: 1024,
            max_frame_bytes: 65_536,
            max_payload_bytes: 65_536,
            max_batch_bytes: 16 * 1024 * 1024,
            client_rate: 50,
            max_bad_frames: 10,
            max_connections_per_user: 100,
            max_connections: 0,
            auth_timeout_ms: 5_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    #[serde(deserialize_with = "lenient::list")]
    pub public: Vec<String>,
    pub history_size: usize,
    pub history_ttl_ms: u64,
    /// Addition: subscriptions one connection may hold.
    pub max_subscriptions: usize,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            public: Vec::new(),
            history_size: 100,
            history_ttl_ms: 300_000,
            max_subscriptions: 128,
        }
    }
}

/// The Centrifugo-compatible endpoint (docs/centrifuge.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentrifugeConfig {
    pub enabled: bool,
    pub path: String,
    /// Subscribes every connection server-side to `#<user id>`, its user stream.
    pub personal_channel: bool,
}

impl Default for CentrifugeConfig {
    fn default() -> Self {
        CentrifugeConfig {
            enabled: true,
            path: "/connection/websocket".into(),
            personal_channel: false,
        }
    }
}

/// `[users]`: user streams and online/offline (protocol section 7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    /// SendToUser messages kept per user for resume; 0 turns user streams off.
    pub history_size: usize,
    pub history_ttl_ms: u64,
    /// USER_OFFLINE only when no connection came back within this.
    pub offline_grace_ms: u64,
    /// How long GetUsers remembers `last_seen`.
    pub last_seen_ttl_ms: u64,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            history_size: 32,
            history_ttl_ms: 120_000,
            offline_grace_ms: 5_000,
            last_seen_ttl_ms: 86_400_000,
        }
    }
}

impl UsersConfig {
    /// Whether SendToUser messages take a place in their user's stream.
    pub fn streams(&self) -> bool {
        self.history_size > 0
    }
}

/// `[broker] kind`: where deliveries, history and membership live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// One node, everything in memory.
    #[default]
    Memory,
    /// Cluster mode on Redis (docs/cluster.md).
    Redis,
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BrokerKind::Memory => "memory",
            BrokerKind::Redis => "redis",
        })
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people (coloured on a terminal only).
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub kind: BrokerKind,
    pub redis_url: String,
    /// Several instances (PROTOCOL.md section 3); when set, `redis_url` is not used.
    #[serde(deserialize_with = "lenient::list")]
    pub redis_urls: Vec<String>,
    pub node_ttl_ms: u64,
}

/// The URL without its password, for messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The most Redis instances one cluster spreads over.
pub const MAX_REDIS_INSTANCES: usize = 64;

impl BrokerConfig {
    /// The instances in use, the first holding what no topic or user owns: `redis_urls` when
    /// set, else `redis_url`.
    pub fn instances(&self) -> Vec<String> {
        match self.redis_urls.is_empty() {
            true => vec![self.redis_url.clone()],
            false => self.redis_urls.clone(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            kind: BrokerKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_urls: Vec::new(),
            node_ttl_ms: 15_000,
        }
    }
}

/// `[admin]`: the web console (protocol section 8, docs/admin.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Off by default; `dev` turns it on.
    pub enabled: bool,
    /// Where the console is served; its JSON API is under `<path>/api/`.
    pub path: String,
    /// A session ends this long after sign-in.
    pub session_ttl_ms: u64,
    /// The cookie is `Secure` even without TLS on this listener (TLS ended upstream).
    pub secure_cookie: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            path: "/admin".into(),
            session_ttl_ms: 28_800_000,
            secure_cookie: false,
        }
    }
}

/// Where a consumer reads its commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerKind {
    #[default]
    Postgres,
    RedisStream,
}

/// One `[[consumers]]` entry (protocol section 9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Names the consumer in logs, metrics and the admin console; unique.
    pub name: String,
    pub kind: ConsumerKind,
    /// postgres: the database (a password inside is a secret: never logged).
    #[serde(
        deserialize_with = "lenient::secret",
        serialize_with = "lenient::redacted"
    )]
    pub dsn: SecretString,
    /// postgres: the outbox table (`<table>_failed` and `<table>_leases` beside it).
    pub table: String,
    /// postgres: rows are ordered per `partition` modulo this.
    pub partitions: u32,
    /// redis_stream: the Redis holding the stream (a password inside is a secret).
    #[serde(
        deserialize_with = "lenient::secret",
        serialize_with = "lenient::redacted"
    )]
    pub url: SecretString,
    pub stream: String,
    pub group: String,
    pub batch_size: usize,
    pub poll_interval_ms: u64,
    pub claim_idle_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            name: String::new(),
            kind: ConsumerKind::Postgres,
            dsn: SecretString::from(String::new()),
            table: "realtime_outbox".into(),
            partitions: 1,
            url: SecretString::from("redis://127.0.0.1:6379".to_owned()),
            stream: "realtime".into(),
            group: "boundary-realtime".into(),
            batch_size: 100,
            poll_interval_ms: 1000,
            claim_idle_ms: 10_000,
        }
    }
}

/// Logging (an addition to the contract's keys): `format` is `human` or `json`, `level` a
/// tracing filter such as `info` or `boundary_realtime=debug`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// What validation read from the files a configuration names, for the server to use as is.
pub struct Checked {
    pub verifier: VerifierConfig,
    pub http_tls: Option<crate::tls::PemIdentity>,
    pub grpc_tls: Option<crate::tls::PemIdentity>,
}

/// Key material stays out of debug output.
impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("algorithm", &self.verifier.algorithm)
            .field("http_tls", &self.http_tls.is_some())
            .field("grpc_tls", &self.grpc_tls.is_some())
            .finish()
    }
}

/// Loads the configuration without validating it (for `token`, which needs only `[jwt]`).
pub fn load_unchecked(file: Option<&Path>) -> Result<Config, ConfigError> {
    layered(file, &[])
}

/// Loads the configuration: defaults, then `file`, then the environment, then `overrides`
/// (dotted key and value, from flags). Validates the result.
pub fn load(
    file: Option<&Path>,
    overrides: &[(&str, String)],
) -> Result<(Config, Checked), ConfigError> {
    let config = match layered_partial(file, overrides) {
        Ok(c) => c,
        Err((mut e, Some(partial))) => {
            // Also what the checks say of the sections that did read, so one run tells all.
            let failed: Vec<String> = std::iter::once(&e)
                .chain(&e.more)
                .map(|p| p.key.split('.').next().unwrap_or("").to_owned())
                .collect();
            if let Err(v) = partial.validate() {
                let section = |k: &str| k.split('.').next().unwrap_or("").to_owned();
                e.more.extend(
                    std::iter::once(v.clone())
                        .chain(v.more)
                        .map(|mut p| {
                            p.more.clear();
                            p
                        })
                        .filter(|p| !failed.contains(&section(&p.key))),
                );
            }
            return Err(e);
        }
        Err((e, None)) => return Err(e),
    };
    let checked = config.validate()?;
    Ok((config, checked))
}

fn layered(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Config, ConfigError> {
    layered_partial(file, overrides).map_err(|(e, _)| e)
}

/// The layered configuration; on values of the wrong type, every section's first problem and
/// the configuration made of the sections that did read (defaults for the others).
fn layered_partial(
    file: Option<&Path>,
    overrides: &[(&str, String)],
) -> Result<Config, (ConfigError, Option<Box<Config>>)> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err((
                err(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ),
                None,
            ));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("REALTIME_").split("__"));
    for (key, value) in overrides {
        fig = fig.merge((*key, value.as_str()));
    }
    let named = |mut e: ConfigError| {
        // A syntax error has no key: name the file.
        if let (Some(path), "config") = (file, e.key.as_str()) {
            e.key = path.display().to_string();
        }
        e
    };
    fig.extract().map_err(|first| {
        if first.path.is_empty() {
            // Not inside a section: a syntax error, or an unknown section.
            return (named(figment_error(first)), None);
        }
        let mut partial = Config::default();
        // serde stops at the first problem: read each section on its own to find them all
        // (the first of each section), so one run reports everything.
        let mut problems = Vec::new();
        macro_rules! sections {
            ($($name:ident => $ty:ty),* $(,)?) => {$(
                match fig.extract_inner::<$ty>(stringify!($name)) {
                Ok(section) => partial.$name = section,
                Err(mut e) => {
                    let $name = stringify!($name);
                    // figment names the section last; put it first, as a key reads.
                    if e.path.last().map(String::as_str) == Some($name) {
                        e.path.pop();
                    }
                    if e.path.first().map(String::as_str) != Some($name) {
                        e.path.insert(0, $name.to_owned());
                    }
                    problems.push(figment_error(e));
                }
                }
            )*};
        }
        sections! {
            node => NodeConfig,
            http => HttpConfig,
            grpc => GrpcConfig,
            jwt => JwtConfig,
            limits => LimitsConfig,
            topics => TopicsConfig,
            centrifuge => CentrifugeConfig,
            broker => BrokerConfig,
            log => LogConfig,
            users => UsersConfig,
            admin => AdminConfig,
            consumers => Vec<ConsumerConfig>,
        }
        // Nothing wrong inside a section: the problem is around them (a syntax error, an
        // unknown section).
        let mut problems = problems.into_iter().map(named);
        let Some(mut e) = problems.next() else {
            return (named(figment_error(first)), None);
        };
        e.more = problems.collect();
        (e, Some(Box::new(partial)))
    })
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let source = e
        .metadata
        .as_ref()
        .map(|m| {
            let name = m.name.to_string();
            if name.contains("environment variable") && !key.is_empty() {
                // Name the variable itself, not the provider.
                return format!(
                    " (from environment variable REALTIME_{})",
                    key.to_uppercase().replace('.', "__")
                );
            }
            match &m.source {
                Some(src) => format!(" (from {name} {src})"),
                None => format!(" (from {name})"),
            }
        })
        .unwrap_or_default();
    let message = match &e.kind {
        figment::error::Kind::UnknownField(name, expected) => {
            let mut m = format!("unknown key {name:?}");
            if let Some(near) = closest(name, expected) {
                m.push_str(&format!(" (did you mean {near:?}?)"));
            }
            format!("{m}; this section has: {}{source}", expected.join(", "))
        }
        // figment's own text wraps the list in backticks twice (``a` or `b``).
        figment::error::Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value {found:?}; expected {}{source}",
                expected
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        }
        kind => format!("{kind}{source}"),
    };
    ConfigError {
        key: if key.is_empty() { "config".into() } else { key },
        message,
        more: Vec::new(),
    }
}

/// The expected name nearest to `name` (at most two edits away), for "did you mean".
fn closest<'a>(name: &str, expected: &[&'a str]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    expected
        .iter()
        .map(|e| (distance(name, e), *e))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, e)| e)
}

impl Config {
    /// Checks every key whose type alone does not make it valid, and reports every problem
    /// found (the first of each section), not only the first.
    ///
    /// The files the configuration names (the JWT public key, the TLS certificates and keys)
    /// are read here, once; what they hold comes back in [`Checked`] for the server to use.
    pub fn validate(&self) -> Result<Checked, ConfigError> {
        let verifier = self.verifier_config();
        let http_tls = self.http_tls();
        let grpc_tls = self.grpc_tls();
        let mut problems: Vec<ConfigError> = [
            self.check_node_and_http(),
            self.check_topics(),
            self.check_api_keys(),
        ]
        .into_iter()
        .chain([
            verifier.as_ref().map(drop).map_err(ConfigError::clone),
            http_tls.as_ref().map(drop).map_err(ConfigError::clone),
            grpc_tls.as_ref().map(drop).map_err(ConfigError::clone),
        ])
        .chain([
            self.check_limits(),
            self.check_centrifuge(),
            self.check_broker(),
            self.check_admin(),
            self.check_consumers(),
        ])
        .filter_map(Result::err)
        .collect();
        match (verifier, http_tls, grpc_tls) {
            (Ok(verifier), Ok(http_tls), Ok(grpc_tls)) if problems.is_empty() => Ok(Checked {
                verifier,
                http_tls,
                grpc_tls,
            }),
            _ => {
                let mut first = problems.remove(0);
                first.more = problems;
                Err(first)
            }
        }
    }

    /// `[node]`, the listeners and `http.allowed_origins`.
    fn check_node_and_http(&self) -> Result<(), ConfigError> {
        if !self.node.id.is_empty() {
            validate_node_id(&self.node.id).map_err(|m| err("node.id", m))?;
        }
        if self.node.shutdown_timeout_ms == 0 {
            return Err(err("node.shutdown_timeout_ms", "must be at least 1"));
        }
        parse_addr("http.listen", &self.http.listen)?;
        parse_addr("grpc.listen", &self.grpc.listen)?;
        parse_log_filter(&self.log.level)
            .map_err(|m| err("log.level", format!("{:?}: {m}", self.log.level)))?;
        for o in &self.http.allowed_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(err(
                    "http.allowed_origins",
                    format!("{o:?} is not an origin like https://app.example.com (or \"*\")"),
                ));
            }
        }
        Ok(())
    }

    /// `[topics] public`.
    fn check_topics(&self) -> Result<(), ConfigError> {
        for p in &self.topics.public {
            let literal = p.replace('*', "x");
            if crate::core::topic::validate_name("topics.public", &literal).is_err() {
                return Err(err(
                    "topics.public",
                    format!(
                        "{p:?} is not a topic pattern (A-Z a-z 0-9 . _ : @ / - and * segments)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[grpc] api_keys`.
    fn check_api_keys(&self) -> Result<(), ConfigError> {
        if self.grpc.api_keys.is_empty() && !self.grpc.allow_unauthenticated {
            return Err(err(
                "grpc.api_keys",
                "at least one API key is required (or set grpc.allow_unauthenticated = true)",
            ));
        }
        if self
            .grpc
            .api_keys
            .iter()
            .any(|k| is_placeholder(k.expose_secret()))
        {
            return Err(err(
                "grpc.api_keys",
                "holds the example file's placeholder (a value starting REPLACE), which anyone can read; put a random key there, e.g. `openssl rand -hex 24`",
            ));
        }
        if self
            .grpc
            .api_keys
            .iter()
            .any(|k| k.expose_secret().len() < 16)
        {
            return Err(err(
                "grpc.api_keys",
                "each key must be at least 16 characters",
            ));
        }
        Ok(())
    }

    /// `[limits]`, `[topics]` numbers and `[grpc]` buffers.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, value, min) in [
            ("grpc.watch_buffer", self.grpc.watch_buffer as u64, 1),
            (
                "grpc.max_concurrent_requests",
                self.grpc.max_concurrent_requests as u64,
                1,
            ),
            ("limits.send_queue", l.send_queue as u64, 1),
            ("limits.max_frame_bytes", l.max_frame_bytes as u64, 128),
            ("limits.max_payload_bytes", l.max_payload_bytes as u64, 1),
            ("limits.max_batch_bytes", l.max_batch_bytes as u64, 1),
            ("limits.client_rate", u64::from(l.client_rate), 1),
            ("limits.max_bad_frames", u64::from(l.max_bad_frames), 1),
            ("limits.auth_timeout_ms", l.auth_timeout_ms, 1),
            ("limits.ping_interval_ms", l.ping_interval_ms, 1),
            ("limits.pong_timeout_ms", l.pong_timeout_ms, 1),
            ("topics.history_ttl_ms", self.topics.history_ttl_ms, 1),
            ("users.history_ttl_ms", self.users.history_ttl_ms, 1),
            ("users.last_seen_ttl_ms", self.users.last_seen_ttl_ms, 1),
            (
                "topics.max_subscriptions",
                self.topics.max_subscriptions as u64,
                1,
            ),
        ] {
            if value < min {
                return Err(err(key, format!("must be at least {min}")));
            }
        }
        if l.send_queue > 1 << 20 {
            return Err(err("limits.send_queue", "must be at most 1048576"));
        }
        if self.users.history_size > 10_000 {
            return Err(err("users.history_size", "must be at most 10000"));
        }
        Ok(())
    }

    /// `[centrifuge]`.
    fn check_centrifuge(&self) -> Result<(), ConfigError> {
        if self.centrifuge.personal_channel && !self.users.streams() {
            return Err(err(
                "centrifuge.personal_channel",
                "needs user streams: it is true while users.history_size is 0",
            ));
        }
        if self.centrifuge.enabled {
            let p = &self.centrifuge.path;
            let reserved = ["/ws", "/healthz", "/readyz", "/metrics"];
            if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '#', ' ', '*', ':', '{']) {
                return Err(err(
                    "centrifuge.path",
                    format!("{p:?} is not a path like /connection/websocket"),
                ));
            }
            if reserved.contains(&p.as_str()) || p.starts_with("/demo") {
                return Err(err(
                    "centrifuge.path",
                    format!("{p:?} is already served by something else"),
                ));
            }
        }
        Ok(())
    }

    /// `[admin]`: a path of its own, and a key to sign in with.
    fn check_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if !a.enabled {
            return Ok(());
        }
        let p = &a.path;
        // Plain path characters only: the pages carry the path as written.
        let plain = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains("//") || !plain {
            return Err(err(
                "admin.path",
                format!(
                    "{p:?} is not a path like /admin (letters, digits, / _ . -; no trailing slash)"
                ),
            ));
        }
        // Every route the listener serves, and what would hide one of them.
        let mut taken = vec!["/ws", "/healthz", "/readyz", "/metrics", "/api", "/demo"];
        if self.centrifuge.enabled {
            taken.push(&self.centrifuge.path);
        }
        let inside =
            |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
        if let Some(t) = taken.iter().find(|t| inside(p, t) || inside(t, p)) {
            return Err(err(
                "admin.path",
                format!("{p:?} collides with {t:?}, which this listener already serves"),
            ));
        }
        if self.grpc.api_keys.is_empty() {
            return Err(err(
                "admin.enabled",
                "the console signs in with an API key and grpc.api_keys is empty",
            ));
        }
        if a.session_ttl_ms < 1000 {
            return Err(err("admin.session_ttl_ms", "must be at least 1000"));
        }
        Ok(())
    }

    /// `[[consumers]]`: each named once, with what its kind needs.
    fn check_consumers(&self) -> Result<(), ConfigError> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 48
                && s.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        for (i, c) in self.consumers.iter().enumerate() {
            let key = |k: &str| format!("consumers[{i}].{k}");
            if c.name.is_empty()
                || !c
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return Err(err(
                    &key("name"),
                    format!("{:?} is not a name (letters, digits, _ . -)", c.name),
                ));
            }
            if self.consumers[..i].iter().any(|o| o.name == c.name) {
                return Err(err(
                    &key("name"),
                    format!("{:?} names two consumers", c.name),
                ));
            }
            for (k, v, min, max) in [
                ("batch_size", c.batch_size as u64, 1, 10_000),
                ("poll_interval_ms", c.poll_interval_ms, 10, 3_600_000),
                ("claim_idle_ms", c.claim_idle_ms, 1000, 3_600_000),
                ("partitions", u64::from(c.partitions), 1, 1024),
            ] {
                if v < min || v > max {
                    return Err(err(&key(k), format!("must be from {min} to {max}")));
                }
            }
            match c.kind {
                ConsumerKind::Postgres => {
                    let dsn = c.dsn.expose_secret();
                    if dsn.is_empty() {
                        return Err(err(
                            &key("dsn"),
                            "a postgres consumer needs a dsn (postgres://user@host/db)",
                        ));
                    }
                    if let Err(e) = dsn.parse::<tokio_postgres::Config>() {
                        return Err(err(
                            &key("dsn"),
                            format!("is not a PostgreSQL connection string: {e}"),
                        ));
                    }
                    if !ident(&c.table) {
                        return Err(err(
                            &key("table"),
                            format!(
                                "{:?} is not a plain table name (a-z 0-9 _, at most 48)",
                                c.table
                            ),
                        ));
                    }
                }
                ConsumerKind::RedisStream => {
                    let url = c.url.expose_secret();
                    if let Err(e) = ::redis::Client::open(url) {
                        return Err(err(
                            &key("url"),
                            format!("{} is not a Redis URL: {e}", redacted_url(url)),
                        ));
                    }
                    for (k, v) in [("stream", &c.stream), ("group", &c.group)] {
                        if v.is_empty() || v.len() > 200 || v.contains(char::is_whitespace) {
                            return Err(err(
                                &key(k),
                                format!("{v:?} is not a stream or group name"),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `[broker]`.
    fn check_broker(&self) -> Result<(), ConfigError> {
        if self.broker.kind == BrokerKind::Redis {
            if let Err(e) = ::redis::Client::open(self.broker.redis_url.as_str()) {
                return Err(err(
                    "broker.redis_url",
                    format!("is not a Redis URL (redis://host:port/db): {e}"),
                ));
            }
            let urls = &self.broker.redis_urls;
            if urls.len() > MAX_REDIS_INSTANCES {
                return Err(err(
                    "broker.redis_urls",
                    format!(
                        "lists {} instances; at most {MAX_REDIS_INSTANCES}",
                        urls.len()
                    ),
                ));
            }
            for (i, url) in urls.iter().enumerate() {
                if let Err(e) = ::redis::Client::open(url.as_str()) {
                    return Err(err(
                        "broker.redis_urls",
                        format!(
                            "entry {} ({}) is not a Redis URL (redis://host:port/db): {e}",
                            i + 1,
                            redacted_url(url)
                        ),
                    ));
                }
                if urls[..i].contains(url) {
                    return Err(err(
                        "broker.redis_urls",
                        format!("lists {} twice; each instance once", redacted_url(url)),
                    ));
                }
            }
            if self.broker.node_ttl_ms < 1000 {
                return Err(err("broker.node_ttl_ms", "must be at least 1000"));
            }
        }
        Ok(())
    }

    pub fn http_addr(&self) -> SocketAddr {
        // validate() has checked it parses; the fallback is never used after validation.
        parse_addr("http.listen", &self.http.listen)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080)))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        parse_addr("grpc.listen", &self.grpc.listen)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50051)))
    }

    /// The HTTP listener's TLS identity, when TLS is configured for it.
    pub fn http_tls(&self) -> Result<Option<crate::tls::PemIdentity>, ConfigError> {
        tls_pair("http", &self.http.tls_cert_file, &self.http.tls_key_file)
    }

    /// The gRPC listener's TLS identity, when TLS is configured for it.
    pub fn grpc_tls(&self) -> Result<Option<crate::tls::PemIdentity>, ConfigError> {
        tls_pair("grpc", &self.grpc.tls_cert_file, &self.grpc.tls_key_file)
    }

    /// What the token verifier needs, reading the public key file when the algorithm uses one.
    pub fn verifier_config(&self) -> Result<VerifierConfig, ConfigError> {
        use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
        let j = &self.jwt;
        let algorithm = j.algorithm;
        let hmac = matches!(algorithm, HS256 | HS384 | HS512);
        let uses_jwks = !j.jwks_file.is_empty() || !j.jwks_url.is_empty();
        let key = if uses_jwks {
            let key = if j.jwks_file.is_empty() {
                "jwt.jwks_url"
            } else {
                "jwt.jwks_file"
            };
            if !j.jwks_file.is_empty() && !j.jwks_url.is_empty() {
                return Err(err("jwt.jwks_url", "set jwks_file or jwks_url, not both"));
            }
            if hmac {
                return Err(err(
                    key,
                    format!("{algorithm:?} uses jwt.secret; a JWKS needs RS*, PS*, ES* or EdDSA"),
                ));
            }
            if !j.public_key_file.is_empty() {
                return Err(err(
                    "jwt.public_key_file",
                    "set public_key_file or a JWKS, not both",
                ));
            }
            let is_http = j.jwks_url.starts_with("https://") || j.jwks_url.starts_with("http://");
            if !j.jwks_url.is_empty() && !is_http {
                return Err(err(
                    "jwt.jwks_url",
                    format!("{:?} is not an http(s) URL", j.jwks_url),
                ));
            }
            for (k, v) in [
                ("jwt.jwks_refresh_ms", j.jwks_refresh_ms),
                ("jwt.jwks_timeout_ms", j.jwks_timeout_ms),
            ] {
                if v == 0 {
                    return Err(err(k, "must be at least 1"));
                }
            }
            KeyMaterial::Jwks
        } else if hmac {
            let secret = j.secret.expose_secret();
            if secret.is_empty() {
                return Err(err("jwt.secret", format!("is required for {algorithm:?}")));
            }
            if is_placeholder(secret) {
                return Err(err("jwt.secret", PLACEHOLDER_SECRET));
            }
            // RFC 7518 section 3.2: a key at least as long as the hash output.
            let min = match algorithm {
                HS384 => 48,
                HS512 => 64,
                _ => 32,
            };
            if secret.len() < min {
                return Err(err(
                    "jwt.secret",
                    format!(
                        "is {} bytes; {algorithm:?} needs at least {min} (RFC 7518 section 3.2); make one with `openssl rand -hex 32`",
                        secret.len(),
                    ),
                ));
            }
            if !j.public_key_file.is_empty() {
                return Err(err(
                    "jwt.public_key_file",
                    format!("must be empty for {algorithm:?} (it uses jwt.secret)"),
                ));
            }
            KeyMaterial::Secret(secret.as_bytes().to_vec())
        } else {
            if j.public_key_file.is_empty() {
                return Err(err(
                    "jwt.public_key_file",
                    format!("is required for {algorithm:?}"),
                ));
            }
            let pem = std::fs::read(PathBuf::from(&j.public_key_file)).map_err(|e| {
                err(
                    "jwt.public_key_file",
                    format!("cannot read {}: {e}", j.public_key_file),
                )
            })?;
            KeyMaterial::PublicPem(pem)
        };
        let cfg = VerifierConfig {
            algorithm,
            key,
            issuer: Some(j.issuer.clone()).filter(|s| !s.is_empty()),
            audience: Some(j.audience.clone()).filter(|s| !s.is_empty()),
            require_exp: j.require_exp,
            leeway_ms: j.leeway_ms,
        };
        crate::core::claims::Verifier::new(&cfg).map_err(|e| {
            let key = if hmac {
                "jwt.secret"
            } else {
                "jwt.public_key_file"
            };
            err(key, e.0)
        })?;
        Ok(cfg)
    }
}

fn tls_pair(
    section: &str,
    cert: &str,
    key: &str,
) -> Result<Option<crate::tls::PemIdentity>, ConfigError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(err(
            &format!("{section}.tls_key_file"),
            "is required with tls_cert_file",
        )),
        (true, false) => Err(err(
            &format!("{section}.tls_cert_file"),
            "is required with tls_key_file",
        )),
        (false, false) => crate::tls::load_identity(cert, key)
            .map(Some)
            .map_err(|e| ConfigError::new(format!("{section}.{}", e.key), e.message)),
    }
}

/// The node's connection cap: `limits.max_connections`, or when 0 the process's open-file
/// soft limit minus 256 for listeners, gRPC and files (100000 when it cannot be read).
pub fn effective_max_connections(limits: &LimitsConfig) -> usize {
    if limits.max_connections > 0 {
        return limits.max_connections;
    }
    open_file_limit()
        .map(|n| n.saturating_sub(256).max(1))
        .unwrap_or(100_000)
}

/// The soft limit on open files of this process (`getrlimit(RLIMIT_NOFILE)`).
fn open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own and pass by pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(lim.rlim_cur).ok()
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| err(key, format!("{s:?} is not an address like 0.0.0.0:8080")))
}

/// Deserializers that accept what an environment variable gives: a comma-separated string
/// for a list, and a number where a string is expected (`REALTIME_JWT__SECRET=12345`).
mod lenient {
    use secrecy::{ExposeSecret, SecretString};
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    struct StringVisitor;

    impl<'de> Visitor<'de> for StringVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(StringVisitor)
    }

    /// [`string`], kept secret.
    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        string(d).map(SecretString::from)
    }

    /// [`list`], each kept secret.
    pub fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
        list(d).map(|v| v.into_iter().map(SecretString::from).collect())
    }

    /// A secret is written out only as empty or `<redacted>` (the defaults layer and debug
    /// dumps): never its value.
    pub fn redacted<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mask(v))
    }

    pub fn redacted_list<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(mask))
    }

    fn mask(v: &SecretString) -> &'static str {
        if v.expose_secret().is_empty() {
            ""
        } else {
            "<redacted>"
        }
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element_seed(Seed)? {
                out.push(s);
            }
            Ok(out)
        }
    }

    struct Seed;

    impl<'de> de::DeserializeSeed<'de> for Seed {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            string(d)
        }
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(ListVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::default();
        c.jwt.secret = "0123456789abcdef0123456789abcdef".into();
        c.grpc.api_keys = vec!["0123456789abcdef".into()];
        c
    }

    #[test]
    fn secrets_never_reach_debug_output_or_serialization() {
        let c = base();
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    fn key_of(c: &Config) -> String {
        c.validate().expect_err("should be invalid").key
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.limits.send_queue, 1024);
        assert_eq!(c.limits.max_frame_bytes, 65536);
        assert_eq!(c.limits.client_rate, 50);
        assert_eq!(c.limits.max_bad_frames, 10);
        assert_eq!(c.limits.auth_timeout_ms, 5000);
        assert_eq!(c.limits.ping_interval_ms, 25000);
        assert_eq!(c.limits.pong_timeout_ms, 10000);
        assert_eq!(c.node.shutdown_timeout_ms, 10000);
        assert_eq!(c.http.listen, "0.0.0.0:8080");
        assert_eq!(c.grpc.listen, "0.0.0.0:50051");
        assert_eq!(c.jwt.algorithm, jsonwebtoken::Algorithm::HS256);
        assert!(c.jwt.require_exp);
        assert_eq!(c.topics.history_size, 100);
        assert_eq!(c.broker.kind, BrokerKind::Memory);
        assert!(base().validate().is_ok());
    }

    #[test]
    fn each_invalid_key_is_named() {
        let mut c = base();
        c.jwt.secret = SecretString::default();
        assert_eq!(key_of(&c), "jwt.secret");
        let mut c = base();
        c.grpc.api_keys.clear();
        assert_eq!(key_of(&c), "grpc.api_keys");
        c.grpc.allow_unauthenticated = true;
        assert!(c.validate().is_ok());
        let mut c = base();
        c.grpc.api_keys = vec!["short".into()];
        assert_eq!(key_of(&c), "grpc.api_keys");
        let mut c = base();
        c.jwt.algorithm = jsonwebtoken::Algorithm::RS256;
        assert_eq!(key_of(&c), "jwt.public_key_file");
        let mut c = base();
        c.http.listen = "nowhere".into();
        assert_eq!(key_of(&c), "http.listen");
        let mut c = base();
        c.limits.send_queue = 0;
        assert_eq!(key_of(&c), "limits.send_queue");
        let mut c = base();
        c.node.id = "a.b".into();
        assert_eq!(key_of(&c), "node.id");
        let mut c = base();
        c.broker.kind = BrokerKind::Redis;
        assert!(c.validate().is_ok(), "the default URL is a Redis URL");
        c.broker.redis_url = "http://127.0.0.1:6379".into();
        assert_eq!(key_of(&c), "broker.redis_url");
        let mut c = base();
        c.broker.kind = BrokerKind::Redis;
        c.broker.redis_urls = vec!["redis://a:1".into(), "redis://:pw@b:2".into()];
        assert!(c.validate().is_ok());
        assert_eq!(c.broker.instances().len(), 2);
        c.broker.redis_urls.push("redis://:pw@b:2".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("broker.redis_urls") && e.contains("twice") && !e.contains("pw"),
            "{e}"
        );
        c.broker.redis_urls = vec!["redis://a:1".into(), "tcp://b".into()];
        assert_eq!(key_of(&c), "broker.redis_urls");
        let mut c = base();
        c.broker.kind = BrokerKind::Redis;
        c.broker.node_ttl_ms = 10;
        assert_eq!(key_of(&c), "broker.node_ttl_ms");
        let mut c = base();
        c.http.allowed_origins = vec!["example.com".into()];
        assert_eq!(key_of(&c), "http.allowed_origins");
        let mut c = base();
        c.centrifuge.path = "/ws".into();
        assert_eq!(key_of(&c), "centrifuge.path");
    }

    #[test]
    fn the_console_needs_a_path_of_its_own_and_a_key() {
        let mut c = base();
        c.admin.enabled = true;
        assert!(c.validate().is_ok());
        for taken in [
            "/ws",
            "/api",
            "/api/v1",
            "/metrics",
            "/demo",
            "/connection",
            "/connection/websocket/x",
            "/healthz",
        ] {
            c.admin.path = taken.into();
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, "admin.path", "{taken}");
            assert!(e.message.contains("collides"), "{taken}: {e}");
        }
        for bad in ["admin", "/", "/admin/", "/a b", "/a\"<b", "//x"] {
            c.admin.path = bad.into();
            assert_eq!(key_of(&c), "admin.path", "{bad:?}");
        }
        c.admin.path = "/ops/console".into();
        assert!(c.validate().is_ok());
        // The Centrifugo endpoint moved under the console's path collides too.
        c.centrifuge.path = "/ops/console/ws".into();
        assert_eq!(key_of(&c), "admin.path");
        let mut c = base();
        c.admin.enabled = true;
        c.grpc.api_keys.clear();
        c.grpc.allow_unauthenticated = true;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "admin.enabled");
        assert!(e.message.contains("API key"), "{e}");
        c.admin.enabled = false;
        assert!(c.validate().is_ok(), "off, it needs nothing");
    }

    #[test]
    fn consumers_are_checked_naming_the_entry_and_key() {
        let pg = || ConsumerConfig {
            name: "orders".into(),
            dsn: "postgres://app:pw@127.0.0.1/app".to_owned().into(),
            ..ConsumerConfig::default()
        };
        let mut c = base();
        c.consumers = vec![pg()];
        assert!(c.validate().is_ok());
        c.consumers = vec![pg(), pg()];
        assert_eq!(key_of(&c), "consumers[1].name");
        let mut bad = pg();
        bad.table = "Orders; DROP TABLE x".into();
        c.consumers = vec![bad];
        assert_eq!(key_of(&c), "consumers[0].table");
        let mut bad = pg();
        bad.dsn = String::new().into();
        c.consumers = vec![bad];
        assert_eq!(key_of(&c), "consumers[0].dsn");
        let mut bad = pg();
        bad.batch_size = 0;
        c.consumers = vec![bad];
        assert_eq!(key_of(&c), "consumers[0].batch_size");
        let mut bad = pg();
        bad.claim_idle_ms = 10;
        c.consumers = vec![bad];
        assert_eq!(key_of(&c), "consumers[0].claim_idle_ms");
        let stream = ConsumerConfig {
            name: "jobs".into(),
            kind: ConsumerKind::RedisStream,
            url: "http://nope".to_owned().into(),
            ..ConsumerConfig::default()
        };
        c.consumers = vec![stream];
        assert_eq!(key_of(&c), "consumers[0].url");
        // The password never shows, in errors or in the configuration printed.
        let printed = format!("{:?}", pg());
        assert!(!printed.contains("pw@"), "{printed}");
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        let mut c = base();
        c.jwt.secret = "x".into();
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "jwt.secret");
        assert!(
            e.message.contains("at least 32") && e.message.contains("RFC 7518"),
            "{e}"
        );
        c.jwt.secret = "0123456789abcdef0123456789abcdef".into();
        c.jwt.algorithm = jsonwebtoken::Algorithm::HS512;
        assert!(c.validate().unwrap_err().message.contains("at least 64"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = Config::default();
        c.limits.send_queue = 0;
        let e = c.validate().unwrap_err();
        let keys: Vec<&str> = std::iter::once(&e)
            .chain(&e.more)
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["grpc.api_keys", "jwt.secret", "limits.send_queue"]);
        let text = e.to_string();
        assert!(
            text.starts_with("invalid configuration (3 problems):"),
            "{text}"
        );
        assert!(
            text.contains("\n  jwt.secret: is required for HS256"),
            "{text}"
        );
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rt.toml",
                r#"
                [jwt]
                secret = "from-file-0123456789abcdef0123456789"
                [grpc]
                api_keys = ["file-key-0123456789"]
                [limits]
                send_queue = 8
                "#,
            )?;
            jail.set_env("REALTIME_LIMITS__SEND_QUEUE", "16");
            jail.set_env(
                "REALTIME_GRPC__API_KEYS",
                "k1-0123456789abcdef,k2-0123456789abcdef",
            );
            jail.set_env(
                "REALTIME_JWT__SECRET",
                "from-env-0123456789abcdef0123456789",
            );
            let (c, _) = load(
                Some(Path::new("rt.toml")),
                &[("http.listen", "127.0.0.1:9".into())],
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.limits.send_queue, 16);
            let keys: Vec<&str> = c.grpc.api_keys.iter().map(|k| k.expose_secret()).collect();
            assert_eq!(keys, ["k1-0123456789abcdef", "k2-0123456789abcdef"]);
            assert_eq!(
                c.jwt.secret.expose_secret(),
                "from-env-0123456789abcdef0123456789"
            );
            assert_eq!(c.http.listen, "127.0.0.1:9");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[limits]\nsend_que = 3\n")?;
            let e = load(Some(Path::new("a.toml")), &[]).unwrap_err();
            assert_eq!(e.key, "limits.send_que");
            assert!(
                e.message.starts_with("unknown key \"send_que\" (did you mean \"send_queue\"?); this section has: send_queue, max_frame_bytes"),
                "{e}"
            );
            assert!(!e.message.contains('`'), "{e}");
            jail.create_file("s.toml", "[limits\nsend_queue = 3\n")?;
            let e = load(Some(Path::new("s.toml")), &[]).unwrap_err();
            assert_eq!(e.key, "s.toml", "a syntax error names the file: {e}");
            assert!(e.message.contains("line 1"), "{e}");
            jail.create_file("b.toml", "[limits]\nsend_queue = \"lots\"\n")?;
            let e = load(Some(Path::new("b.toml")), &[]).unwrap_err();
            assert_eq!(e.key, "limits.send_queue", "{e}");
            let e = load(Some(Path::new("missing.toml")), &[]).unwrap_err();
            assert_eq!(e.key, "--config");
            // Enumerations are parsed when loaded, and a bad value names its key.
            for (file, text, key) in [
                ("k.toml", "[broker]\nkind = \"kafka\"\n", "broker.kind"),
                ("f.toml", "[log]\nformat = \"xml\"\n", "log.format"),
                ("a.toml", "[jwt]\nalgorithm = \"none\"\n", "jwt.algorithm"),
            ] {
                jail.create_file(file, text)?;
                let e = load(Some(Path::new(file)), &[]).unwrap_err();
                assert_eq!(e.key, key, "{e}");
            }
            jail.create_file("r.toml", "[broker]\nkind = \"redis\"\n[log]\nformat = \"json\"\n[jwt]\nalgorithm = \"HS512\"\n")?;
            let c = load_unchecked(Some(Path::new("r.toml"))).unwrap();
            assert_eq!(
                (c.broker.kind, c.log.format, c.jwt.algorithm),
                (
                    BrokerKind::Redis,
                    LogFormat::Json,
                    jsonwebtoken::Algorithm::HS512
                )
            );
            Ok(())
        });
    }

    #[test]
    fn type_errors_of_every_section_come_in_one_run_naming_key_and_variable() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                r#"
                [node]
                shutdown_timeout_ms = "soon"
                [http]
                demo = 3
                "#,
            )?;
            jail.set_env("REALTIME_LIMITS__CLIENT_RATE", "fast");
            let e = load_unchecked(Some(Path::new("bad.toml"))).unwrap_err();
            let all: Vec<(String, String)> = std::iter::once(&e)
                .chain(&e.more)
                .map(|p| (p.key.clone(), p.message.clone()))
                .collect();
            let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "node.shutdown_timeout_ms",
                    "http.demo",
                    "limits.client_rate"
                ]
            );
            assert!(all[0].1.ends_with("(from TOML file bad.toml)"), "{all:?}");
            assert!(
                all[2]
                    .1
                    .ends_with("(from environment variable REALTIME_LIMITS__CLIENT_RATE)"),
                "{all:?}"
            );
            // An unknown value names the choices once, without doubled backticks.
            jail.set_env("REALTIME_LOG__FORMAT", "xml");
            let e = load_unchecked(None).unwrap_err();
            let log = std::iter::once(&e)
                .chain(&e.more)
                .find(|p| p.key == "log.format")
                .unwrap();
            assert_eq!(
                log.message,
                "unknown value \"xml\"; expected \"human\" or \"json\" (from environment variable REALTIME_LOG__FORMAT)"
            );
            // A syntax error is one problem, naming the file.
            jail.create_file("syntax.toml", "[limits\nx = 1\n")?;
            let e = load_unchecked(Some(Path::new("syntax.toml"))).unwrap_err();
            assert_eq!((e.key.as_str(), e.more.len()), ("syntax.toml", 0));
            Ok(())
        });
    }

    #[test]
    fn a_type_error_and_the_checks_problems_come_together() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REALTIME_LOG__FORMAT", "xml");
            let e = load(None, &[]).unwrap_err();
            let keys: Vec<&str> = std::iter::once(&e)
                .chain(&e.more)
                .map(|p| p.key.as_str())
                .collect();
            assert_eq!(keys, ["log.format", "grpc.api_keys", "jwt.secret"]);
            Ok(())
        });
    }
}
