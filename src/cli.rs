//! The command line: `serve`, `dev`, `token`, `bench`, `--version`. Parses flags with clap, loads the
//! configuration, sets up logging, and runs the server until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jsonwebtoken::{EncodingKey, Header};
use secrecy::ExposeSecret;

use crate::clock::now_ms;
use crate::config::{self, Config};
use crate::server::Server;

#[derive(Parser)]
#[command(
    name = "boundary-realtime",
    version,
    about = "A push service: browsers hold WebSockets, backends push to them over gRPC."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human or json (overrides [log] format).
    #[arg(long, global = true)]
    log_format: Option<crate::config::LogFormat>,
    /// Log filter, e.g. info or info,boundary_realtime=debug (wins over RUST_LOG and [log] level).
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service with a configuration file, environment variables and flags.
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides [http] listen.
        #[arg(long)]
        http_listen: Option<String>,
        /// Overrides [grpc] listen.
        #[arg(long)]
        grpc_listen: Option<String>,
        /// Load and validate the configuration (files included), print the outcome, and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Run on 127.0.0.1 with a random secret and API key, and print how to connect.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:50051")]
        grpc_listen: SocketAddr,
        /// A TOML file with settings to try beyond the defaults (such as [[consumers]]); the
        /// listeners, secret, key and node id stay dev's own.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print one token signed with the configured HS* secret.
    Token {
        /// A TOML configuration file with the secret (else REALTIME_JWT__SECRET).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// A role; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A topic pattern the client may subscribe to; repeat for several.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Lifetime in seconds (at least 1).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
    },
    /// Measure a running node: connections, deliveries/s, latency, server memory and CPU.
    #[cfg(feature = "load-tool")]
    Bench(boundary_realtime_bench::Options),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("boundary-realtime: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            config,
            http_listen,
            grpc_listen,
            check_config,
        } => {
            let mut overrides = Vec::new();
            if let Some(v) = http_listen {
                overrides.push(("http.listen", v));
            }
            if let Some(v) = grpc_listen {
                overrides.push(("grpc.listen", v));
            }
            if let Some(v) = cli.log_format {
                overrides.push(("log.format", v.as_str().to_owned()));
            }
            let (config, checked) =
                config::load(config.as_deref(), &overrides).map_err(|e| e.to_string())?;
            let filter = log_filter(cli.log_level.as_deref(), &config)?;
            if check_config {
                println!(
                    "configuration is valid: http {}, grpc {}, jwt {:?}, broker {}",
                    config.http.listen,
                    config.grpc.listen,
                    config.jwt.algorithm,
                    config.broker.kind
                );
                return Ok(());
            }
            crate::telemetry::init(config.log.format, filter);
            runtime()?.block_on(serve(config, checked, None))
        }
        Command::Dev {
            http_listen,
            grpc_listen,
            config: file,
        } => {
            if !http_listen.ip().is_loopback() || !grpc_listen.ip().is_loopback() {
                return Err("dev listens on loopback addresses only (127.0.0.1 or [::1])".into());
            }
            // Embedded defaults, with what REALTIME_* variables set (to try a setting, such as
            // REALTIME_CENTRIFUGE__PERSONAL_CHANNEL=true); the listeners, the secret, the key
            // and the node id are dev's own.
            let mut config = config::load_unchecked(file.as_deref()).map_err(|e| e.to_string())?;
            config.http.listen = http_listen.to_string();
            config.grpc.listen = grpc_listen.to_string();
            config.jwt.secret = crate::random::hex(32).into();
            config.grpc.api_keys = vec![crate::random::hex(16).into()];
            config.node.id = "dev".into();
            // Loopback only, and every socket still needs a token: let a browser console on any
            // page connect (the quick start pastes the snippet into one).
            config.http.allowed_origins = vec!["*".into()];
            config.http.demo = true;
            config.admin.enabled = true;
            if let Some(v) = cli.log_format {
                config.log.format = v;
            }
            let checked = config.validate().map_err(|e| e.to_string())?;
            let filter = log_filter(cli.log_level.as_deref(), &config)?;
            crate::telemetry::init(config.log.format, filter);
            runtime()?.block_on(serve(config, checked, Some(print_dev_banner)))
        }
        Command::Token {
            config,
            sub,
            roles,
            topics,
            ttl,
        } => {
            let config = config::load_unchecked(config.as_deref()).map_err(|e| e.to_string())?;
            let token = mint(&config, &sub, &roles, &topics, ttl)?;
            println!("{token}");
            Ok(())
        }
        #[cfg(feature = "load-tool")]
        Command::Bench(opts) => {
            let report = runtime()?
                .block_on(boundary_realtime_bench::run(&opts))
                .map_err(|e| e.to_string())?;
            if opts.json {
                eprint!("{}", report.human());
                println!("{}", report.json());
            } else {
                print!("{}", report.human());
            }
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Mints a token with the configured HS* secret.
pub fn mint(
    config: &Config,
    sub: &str,
    roles: &[String],
    topics: &[String],
    ttl: u64,
) -> Result<String, String> {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    let algorithm = config.jwt.algorithm;
    if !matches!(algorithm, HS256 | HS384 | HS512) {
        return Err(format!(
            "jwt.algorithm is {algorithm:?}: token signs only with an HS* secret"
        ));
    }
    if config.jwt.secret.expose_secret().is_empty() {
        return Err(
            "jwt.secret is not configured: set it in the config file or REALTIME_JWT__SECRET"
                .into(),
        );
    }
    if config::is_placeholder(config.jwt.secret.expose_secret()) {
        return Err(format!("jwt.secret {}", config::PLACEHOLDER_SECRET));
    }
    if sub.is_empty() {
        return Err("--sub must not be empty".into());
    }
    let now = now_ms() / 1000;
    let mut claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now + ttl as i64,
        "roles": roles,
        "topics": topics,
    });
    if !config.jwt.issuer.is_empty() {
        claims["iss"] = config.jwt.issuer.clone().into();
    }
    if !config.jwt.audience.is_empty() {
        claims["aud"] = config.jwt.audience.clone().into();
    }
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(config.jwt.secret.expose_secret().as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

/// The log filter in force (`--log-level`, else `RUST_LOG`, else `[log] level`), checked.
fn log_filter(
    flag: Option<&str>,
    config: &Config,
) -> Result<tracing_subscriber::filter::Targets, String> {
    let rust_log = std::env::var("RUST_LOG").ok();
    crate::telemetry::select(flag, rust_log.as_deref(), &config.log.level)
}

async fn serve(
    config: Config,
    checked: config::Checked,
    banner: Option<fn(&Server, &Config)>,
) -> Result<(), String> {
    let server = Server::start_checked(config.clone(), checked)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(banner) = banner {
        banner(&server, &config);
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    if server.shutdown().await {
        tracing::info!("shut down cleanly");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// This binary's path as a shell word, so a printed command works when pasted where `dev` runs
/// (`cargo run` leaves nothing named boundary-realtime on PATH).
fn this_binary() -> String {
    let path = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "boundary-realtime".into());
    if path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        path
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

fn print_dev_banner(server: &Server, config: &Config) {
    let token = mint(
        config,
        "dev-user",
        &["dev".to_owned()],
        &["**".to_owned()],
        24 * 3600,
    )
    .unwrap_or_else(|e| format!("<cannot mint: {e}>"));
    // The dev banner prints this run's secret and key on purpose: they exist only for it.
    let key = config
        .grpc
        .api_keys
        .first()
        .map(|k| k.expose_secret().to_owned())
        .unwrap_or_default();
    let ws = format!("ws://{}/ws", server.http_addr);
    let centrifuge = if config.centrifuge.enabled {
        format!(
            "\n  Centrifugo ws://{}{}   (for the Centrifugo SDKs, docs/centrifuge.md)",
            server.http_addr, config.centrifuge.path
        )
    } else {
        String::new()
    };
    let admin = if config.admin.enabled {
        format!(
            "\n  Admin      http://{}{}   (sign in with the API key)",
            server.http_addr, config.admin.path
        )
    } else {
        String::new()
    };
    let grpc = server.grpc_addr;
    println!(
        r#"
boundary-realtime dev mode: loopback only, a random secret and API key for this run,
WebSocket upgrades accepted from any Origin (`serve` allows only the same host by default).

  WebSocket  {ws}{centrifuge}
  gRPC       {grpc}   (plaintext, reflection on)
  API key    {key}
  Token      {token}
             (user "dev-user", role "dev", any topic, valid 24 h)
  Demo page  http://{http}/demo#token={token}{admin}

Connect from a browser console with the client library (the token goes in the first
frame, never the URL):

  const {{ RealtimeClient }} = await import("http://{http}/demo/realtime.js");
  const rt = new RealtimeClient("{ws}", {{ token: "{token}" }});
  rt.on("message", (m) => console.log(m.type, m.payload));
  rt.connect();

Send that connection (or the demo page) a message, with curl (the HTTP JSON API):

  curl -H 'Authorization: Bearer {key}' \
    -d '{{"userId":"dev-user","message":{{"type":"hello","payload":{{"text":"hi"}}}}}}' \
    http://{http}/api/v1/SendToUser

Publish to a topic the demo page subscribed to (here "news"):

  curl -H 'Authorization: Bearer {key}' \
    -d '{{"topic":"news","message":{{"type":"headline","payload":{{"title":"hello"}}}}}}' \
    http://{http}/api/v1/Publish

The same over gRPC, with grpcurl:

  grpcurl -plaintext -H 'authorization: Bearer {key}' \
    -d '{{"user_id":"dev-user","message":{{"type":"hello","payload_json":"{{\"text\":\"hi\"}}"}}}}' \
    {grpc} boundary.realtime.v1.RealtimeService/SendToUser

Mint more tokens for this run (this binary; after `cargo install --path .` it is on your
PATH as boundary-realtime):

  REALTIME_JWT__SECRET={secret} {me} token --sub alice --role admin

Ctrl-C stops the server.
"#,
        secret = config.jwt.secret.expose_secret(),
        http = server.http_addr,
        me = this_binary(),
    );
}
