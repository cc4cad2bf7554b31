//! Starting and stopping one node: bind both listeners, build this node's state, the cluster
//! engine (`[broker] kind`) and the hub over them, serve both doors, and shut down in order
//! (stop taking work, close every WebSocket with 1001, end WatchEvents with UNAVAILABLE, let
//! in-flight unary RPCs finish, say goodbye to the cluster) within `shutdown_timeout_ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::auth::Authenticator;
use crate::config::{Checked, Config, ConfigError};
use crate::core::ids::sanitize_node_id;
use crate::grpc::{GrpcDoor, FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::hub::Hub;
use crate::node::LocalNode;
use crate::tls::{PeerAddr, TlsListener};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Broker(#[from] crate::cluster::StartError),
}

/// A running node.
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub hub: Arc<Hub>,
    cluster: crate::cluster::Started,
    health: tonic_health::server::HealthReporter,
    http_task: JoinHandle<()>,
    grpc_task: JoinHandle<()>,
    /// The consumers' tasks: each finishes the record in hand at shutdown.
    consumer_tasks: Vec<JoinHandle<()>>,
}

/// Serves the HTTP routes on `listener` (plain or TLS) until shutdown begins.
async fn serve_http<L>(listener: L, app: axum::Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    PeerAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|down| *down).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// This machine's host name (`gethostname(2)`).
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end]).ok().map(str::to_owned)
}

/// The node id: the configured one, or the host name plus a random suffix.
pub fn resolve_node_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = hostname()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    format!(
        "{}-{}",
        sanitize_node_id(host.trim()),
        crate::random::hex(3)
    )
}

/// This node's state, with connection sequences starting from the start time so that a
/// restarted node with a fixed id does not hand out the ids of its previous life.
fn new_local_node(node_id: String, event_buffer: usize) -> LocalNode {
    let started = crate::clock::now_ms();
    let seq_start = (started.max(0) as u64) << 16;
    LocalNode::new(
        node_id,
        started,
        seq_start,
        format!("{}-{:x}", crate::random::hex(4), started),
        event_buffer,
    )
}

/// Binds `addr` (the value of config key `key`); returns the listener and the address it got
/// (port 0 picks one).
async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// The WebSocket door and the other HTTP routes, plain or TLS, until shutdown begins.
fn serve_http_door(
    hub: &Arc<Hub>,
    consumers: Vec<Arc<crate::consumers::status::Status>>,
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<crate::tls::PemIdentity>,
) -> Result<JoinHandle<()>, StartError> {
    let app = crate::http::router(Arc::clone(hub), consumers);
    let Some(id) = tls else {
        let plain = crate::tls::PlainListener(listener);
        return Ok(tokio::spawn(serve_http(plain, app, hub.shutdown_signal())));
    };
    let config = crate::tls::http_server_config(&id)
        .map_err(|e| ConfigError::new("http.tls_cert_file", e))?;
    let tls = TlsListener::new(listener, config, hub.shutdown_signal()).map_err(|source| {
        StartError::Bind {
            key: "http.listen",
            addr,
            source,
        }
    })?;
    Ok(tokio::spawn(serve_http(tls, app, hub.shutdown_signal())))
}

/// The gRPC door with health and reflection, until shutdown begins. Returns the health
/// reporter (shutdown marks the node not serving) and the server's task.
async fn serve_grpc_door(
    hub: &Arc<Hub>,
    listener: TcpListener,
    tls: Option<crate::tls::PemIdentity>,
) -> Result<(tonic_health::server::HealthReporter, JoinHandle<()>), StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let door = GrpcDoor::new(Arc::clone(hub)).into_service();
    let mut stop = hub.shutdown_signal();
    let per_connection = hub.config.grpc.max_concurrent_requests;
    let mut builder = tonic::transport::Server::builder();
    if let Some(id) = tls {
        crate::tls::install_crypto_provider();
        let identity = tonic::transport::Identity::from_pem(id.cert_pem, id.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ConfigError::new("grpc.tls_cert_file", e.to_string()))?;
    }
    // TCP_NODELAY on every accepted gRPC connection: a reply written while another is
    // unacknowledged must not wait out the client's delayed ACK (40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let serve = builder
            .concurrency_limit_per_connection(per_connection)
            .load_shed(true)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(door)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|down| *down).await;
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "gRPC listener failed");
        }
    });
    Ok((health, task))
}

impl Server {
    /// Validates the configuration, binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let checked = config.validate()?;
        Server::start_checked(config, checked).await
    }

    /// [`Server::start`] with a configuration already validated (by `config::load`): the
    /// files it names are not read again.
    pub async fn start_checked(config: Config, checked: Checked) -> Result<Server, StartError> {
        let node_id = resolve_node_id(&config.node.id);
        let (http_listener, http_addr) = bind("http.listen", config.http_addr()).await?;
        let (grpc_listener, grpc_addr) = bind("grpc.listen", config.grpc_addr()).await?;
        let Checked {
            verifier,
            http_tls,
            grpc_tls,
        } = checked;
        let auth = Arc::new(Authenticator::new(&config, verifier).await?);
        let local = Arc::new(new_local_node(node_id, config.grpc.watch_buffer));
        let cluster = crate::cluster::build(&config, Arc::clone(&local)).await?;
        let hub = Hub::new(config, Arc::clone(&auth), local, cluster.engine.clone());
        let handler: std::sync::Weak<dyn crate::cluster::CommandHandler> =
            Arc::downgrade(&hub) as _;
        cluster.register(handler);
        tokio::spawn(auth.refresh_loop(hub.shutdown_signal()));
        let consumers = crate::consumers::start(&hub);
        let statuses = consumers.iter().map(|(s, _)| Arc::clone(s)).collect();
        let http_task = serve_http_door(&hub, statuses, http_listener, http_addr, http_tls)?;
        let (health, grpc_task) = serve_grpc_door(&hub, grpc_listener, grpc_tls).await?;
        tokio::spawn(crate::sweeper::run(Arc::clone(&hub)));
        tokio::spawn(crate::sweeper::run_users(Arc::clone(&hub)));
        tracing::info!(
            node_id = %hub.node_id(),
            max_connections = hub.max_connections,
            http_addr = %http_addr,
            grpc_addr = %grpc_addr,
            "listening"
        );
        Ok(Server {
            http_addr,
            grpc_addr,
            hub,
            cluster,
            health,
            http_task,
            grpc_task,
            consumer_tasks: consumers.into_iter().map(|(_, t)| t).collect(),
        })
    }

    /// Shuts down gracefully; true when everything finished within `shutdown_timeout_ms`.
    pub async fn shutdown(self) -> bool {
        let timeout = Duration::from_millis(self.hub.config.node.shutdown_timeout_ms);
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        self.hub.begin_shutdown();
        let hub = Arc::clone(&self.hub);
        let drained = tokio::time::timeout(timeout, async move {
            let _ = self.http_task.await;
            let _ = self.grpc_task.await;
            for t in self.consumer_tasks {
                let _ = t.await;
            }
            // Every socket's task, not just the registry: see `Hub::sockets_ended`.
            hub.sockets_ended().await;
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.hub.open_sockets(),
                "shutdown timeout reached; dropping what is left"
            );
        }
        self.cluster.leave().await;
        drained
    }
}
