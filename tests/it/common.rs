//! Test harness: a real server on loopback port 0, real WebSocket clients (tokio-tungstenite)
//! and the generated tonic client. Waits are bounded polls, never fixed sleeps.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boundary_realtime::config::Config;
use boundary_realtime::proto::realtime_service_client::RealtimeServiceClient;
use boundary_realtime::proto::{self, SendToConnectionRequest};
use boundary_realtime::server::Server;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::transport::Channel;
use tonic::Request;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef-01";
pub const API_KEY: &str = "test-api-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config() -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".into();
    c.grpc.listen = "127.0.0.1:0".into();
    c.jwt.secret = SECRET.into();
    c.grpc.api_keys = vec![API_KEY.into()];
    c.node.id = "test".into();
    c
}

pub struct TestServer {
    pub server: Option<Server>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

pub async fn start() -> TestServer {
    start_with(config()).await
}

pub async fn start_with(config: Config) -> TestServer {
    let server = Server::start(config).await.expect("server starts");
    TestServer {
        http: server.http_addr,
        grpc: server.grpc_addr,
        server: Some(server),
    }
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with the test secret.
pub fn sign(alg: Algorithm, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A valid HS256 token for `user` with `roles`.
pub fn token(user: &str, roles: &[&str]) -> String {
    sign(
        Algorithm::HS256,
        json!({"sub": user, "exp": now_s() + 3600, "roles": roles}),
    )
}

/// Adds the API key to a request.
pub fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    r
}

pub fn msg(kind: &str, payload: &str) -> Option<proto::Message> {
    Some(proto::Message {
        r#type: kind.into(),
        payload_json: payload.into(),
        id: String::new(),
    })
}

pub type Client = RealtimeServiceClient<Channel>;

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: String,
}

impl TestServer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    pub async fn client(&self) -> Client {
        RealtimeServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connects")
    }

    /// Connects with the token in the query and reads the `connected` frame.
    pub async fn connect(&self, user: &str, roles: &[&str]) -> Ws {
        self.connect_token(&token(user, roles)).await
    }

    pub async fn connect_token(&self, token: &str) -> Ws {
        connect_url(format!("{}?token={token}", self.ws_url()))
            .await
            .0
    }

    /// Upgrades without a token (first-frame auth follows).
    pub async fn connect_bare(&self) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("upgrade");
        Ws {
            stream,
            id: String::new(),
        }
    }

    /// The HTTP status of an upgrade attempt that is expected to fail.
    pub async fn upgrade_status(&self, query: &str, auth_header: Option<&str>) -> u16 {
        let mut req = format!("{}{query}", self.ws_url())
            .into_client_request()
            .unwrap();
        if let Some(h) = auth_header {
            req.headers_mut()
                .insert("authorization", h.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected upgrade error {e}"),
        }
    }

    pub async fn shutdown(&mut self) -> bool {
        self.server.take().expect("running").shutdown().await
    }

    pub fn hub(&self) -> &std::sync::Arc<boundary_realtime::hub::Hub> {
        &self.server.as_ref().expect("running").hub
    }

    /// Sends each connection a marker, and checks it is the next frame each receives: proof
    /// that nothing else was queued to them before it.
    pub async fn assert_nothing_pending(&self, client: &mut Client, conns: &mut [&mut Ws]) {
        for ws in conns.iter_mut() {
            client
                .send_to_connection(authed(SendToConnectionRequest {
                    connection_id: ws.id.clone(),
                    message: msg("marker", "null"),
                }))
                .await
                .unwrap();
            let next = ws.next_json().await;
            assert_eq!(
                next["type"], "marker",
                "connection {} had something pending: {next}",
                ws.id
            );
        }
    }
}

impl Ws {
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON (pings and pongs skipped); panics on close or timeout.
    pub async fn next_json(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a frame within the wait");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("JSON frame")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the close frame; returns its code and reason and the text frames before it.
    pub async fn next_close(&mut self) -> (u16, String, Vec<Value>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut texts = Vec::new();
        loop {
            let m = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a close within the wait");
            match m {
                Some(Ok(Message::Text(t))) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|CloseFrame { code, reason }| (code.into(), reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    // Read on, as a browser does: that sends our close reply, and the server
                    // ends the TCP connection instead of waiting out its close timeout.
                    let _ = tokio::time::timeout_at(deadline, async {
                        while let Some(Ok(_)) = self.stream.next().await {}
                    })
                    .await;
                    return (code, reason, texts);
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Opens a WebSocket at `url` (its query carrying the token) and reads the `connected` frame;
/// returns the socket and that frame.
pub async fn connect_url(url: String) -> (Ws, Value) {
    let (stream, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let mut ws = Ws {
        stream,
        id: String::new(),
    };
    let c = ws.next_json().await;
    assert_eq!(c["op"], "connected", "{c}");
    ws.id = c["connection_id"].as_str().unwrap().to_owned();
    (ws, c)
}

/// Checks that `cond` holds for the whole of `window`, every 50 ms (a bounded observation of
/// something that must not change, tied to the constant that would change it).
pub async fn throughout<F, Fut>(what: &str, window: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end {
        assert!(cond().await, "expected {what} throughout {window:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cond().await, "expected {what} throughout {window:?}");
}

/// Polls `cond` every 10 ms until it holds or the wait runs out.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SendToUser of a small message; the number of connections it was queued to.
pub async fn send_user(client: &mut Client, user: &str, kind: &str, payload: &str) -> u32 {
    let req = proto::SendToUserRequest {
        user_id: user.into(),
        message: msg(kind, payload),
    };
    client
        .send_to_user(authed(req))
        .await
        .expect("SendToUser")
        .into_inner()
        .connections
}

/// SendToRole of a small message; the number of connections it was queued to.
pub async fn send_role(client: &mut Client, role: &str, kind: &str, payload: &str) -> u32 {
    let req = proto::SendToRoleRequest {
        role: role.into(),
        message: msg(kind, payload),
    };
    client
        .send_to_role(authed(req))
        .await
        .expect("SendToRole")
        .into_inner()
        .connections
}

/// A child process that is killed and reaped if the test ends early.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` on ephemeral ports with the test secret and key, logging in `log_format` to a pipe
/// on stderr.
pub fn serve_command(log_format: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--log-format",
        log_format,
    ])
    .env("REALTIME_JWT__SECRET", SECRET)
    .env("REALTIME_GRPC__API_KEYS", API_KEY)
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Starts `serve` on ephemeral ports and reads the addresses from its "listening" log line.
pub fn spawn_serve(
    extra_env: &[(&str, &str)],
) -> (Reaped, String, String, std::sync::mpsc::Receiver<String>) {
    let mut cmd = serve_command("json");
    cmd.env("REALTIME_NODE__ID", "bin");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    spawn_command(cmd)
}

/// Runs `cmd` (a [`serve_command`] with more set) and reads the addresses from its
/// "listening" log line; the other lines come through the receiver.
pub fn spawn_command(
    mut cmd: Command,
) -> (Reaped, String, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Reaped(cmd.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("listening line");
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        if v["fields"]["message"] == "listening" {
            let http = v["fields"]["http_addr"].as_str().unwrap().to_owned();
            let grpc = v["fields"]["grpc_addr"].as_str().unwrap().to_owned();
            return (child, http, grpc, rx);
        }
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_boundary-realtime");

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` of this test's own, on a free loopback port, keeping nothing on disk;
/// it can be stopped and started again on the same port. Killed when dropped.
pub struct RedisProc {
    child: Option<Reaped>,
    pub port: u16,
}

impl RedisProc {
    pub fn start() -> RedisProc {
        let mut r = RedisProc {
            child: None,
            port: free_port(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: no chance to save anything).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(Reaped(child));
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if self.ping() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

/// One HTTP/1.1 exchange's answer: status, headers (lowercased names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The session cookie a sign-in set, as a `Cookie` header value.
    pub fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_owned()
    }
}

pub async fn http(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        s.http,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}
