//! The load tool's WebSocket side: opens authenticated connections (the token in the
//! `Authorization` header, never the URL; spread over 127.0.0.x source addresses when one
//! address would run out of ports), subscribes each to its group's topic in topic mode, and
//! runs one reader task per connection that counts what arrives into sharded statistics.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::tally::{self, Counts, Order};
use super::{unix_ns, BenchError, WireProtocol};

/// Connections opened from one source address at most (Linux's default ephemeral range holds
/// about 28,000 ports per source/destination pair).
const PER_SOURCE: usize = 20_000;
/// How long one connection may take to connect, upgrade and be welcomed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies are recorded in microseconds up to a minute (longer ones count as a minute).
const MAX_LATENCY_US: u64 = 60_000_000;
const SHARDS: usize = 16;
/// Loopback source addresses used at least.
const SOURCES: u8 = 8;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the connections go.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub protocol: WireProtocol,
}

impl Target {
    pub async fn resolve(url: &str, protocol: WireProtocol) -> Result<Target, BenchError> {
        let bad = |why: &str| BenchError::Usage(format!("--ws-url {url:?}: {why}"));
        let rest = match url.split_once("://") {
            Some(("ws", rest)) => rest,
            Some(("wss", _)) => {
                return Err(bad(
                    "wss:// is not supported by bench; point it at a plaintext listener",
                ))
            }
            _ => return Err(bad("must start with ws://")),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|e| bad(&format!("cannot resolve {host_port}: {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("{host_port} resolves to no address")))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            protocol,
        })
    }

    /// The source address for connection `i` toward a loopback destination: 127.0.0.1 to
    /// 127.0.0.8 in turn (more above 8 × 20,000 connections), the system's choice otherwise.
    /// Spreading also keeps connect() fast: the kernel's search for a free source port
    /// slows down as one source/destination pair fills up.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                let sources = (SOURCES as usize).max(i / PER_SOURCE + 1).min(254);
                let n = 1 + (i % sources) as u8;
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            }
            _ => None,
        }
    }
}

/// Counts shared by every reader; each connection records into one of a few shards, so
/// readers on different threads rarely meet on a lock.
pub struct Stats {
    shards: Vec<Mutex<Shard>>,
    pub opened: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
}

struct Shard {
    counts: Counts,
    hist: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    counts: Counts::default(),
                    hist: latency_histogram(),
                })
            })
            .collect();
        Arc::new(Stats {
            shards,
            opened: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for s in &self.shards {
            total.add(&s.lock().counts);
        }
        total
    }

    pub fn histogram(&self) -> Histogram<u64> {
        let mut total = latency_histogram();
        for s in &self.shards {
            // Same bounds on both sides: adding cannot fail.
            let _ = total.add(&s.lock().hist);
        }
        total
    }

    /// Connections the server closed during the run, by close code (1006: without a close).
    pub fn closes(&self) -> BTreeMap<u16, u64> {
        self.closes.lock().clone()
    }

    /// Forgets everything received so far (the connect phase's frames are not the load's).
    pub fn reset(&self) {
        for s in &self.shards {
            let mut s = s.lock();
            s.counts = Counts::default();
            s.hist.reset();
        }
    }
}

pub fn latency_histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Opens connection `i`: TCP (from `source`), the upgrade with the token in the header, the
/// `connected` frame, and in topic mode a subscription answered by `subscribed`.
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
    topic: Option<&str>,
) -> Result<Ws, BenchError> {
    let (ws, _) = open_at(target, source, token, topic, "").await?;
    Ok(ws)
}

/// Opens a connection with `query` added to the URL (`since=..&epoch=..`, or empty) and
/// returns it with its `connected` frame (native protocol; `None` for Centrifugo's).
pub async fn open_at(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
    topic: Option<&str>,
    query: &str,
) -> Result<(Ws, Option<String>), BenchError> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        open_inner(target, source, token, topic, query),
    )
    .await
    .map_err(|_| BenchError::Failed(format!("connecting to {} timed out", target.url)))?
}

async fn open_inner(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
    topic: Option<&str>,
    query: &str,
) -> Result<(Ws, Option<String>), BenchError> {
    let unreachable = |e: String| BenchError::Unreachable {
        what: "WebSocket endpoint",
        url: target.url.clone(),
        reason: e,
    };
    let socket = TcpSocket::new_v4().map_err(|e| unreachable(e.to_string()))?;
    if let Some(ip) = source {
        defer_port_choice(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| unreachable(format!("cannot bind {ip}: {e}")))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let url = match (query.is_empty(), target.url.contains('?')) {
        (true, _) => target.url.clone(),
        (false, true) => format!("{}&{query}", target.url),
        (false, false) => format!("{}?{query}", target.url),
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| BenchError::Usage(format!("--ws-url {:?}: {e}", target.url)))?;
    match target.protocol {
        WireProtocol::Native => {
            let bearer = format!("Bearer {token}")
                .parse()
                .map_err(|_| BenchError::Usage("the token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", bearer);
        }
        WireProtocol::CentrifugeJson => {}
        WireProtocol::CentrifugeProtobuf => {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                tungstenite::http::HeaderValue::from_static("centrifuge-protobuf"),
            );
        }
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .unwrap_or_default();
                BenchError::Rejected(format!("the upgrade got HTTP {}: {body}", resp.status()))
            }
            other => unreachable(other.to_string()),
        })?;
    if target.protocol != WireProtocol::Native {
        super::centrifuge::start(&mut ws, target.protocol, token, topic).await?;
        return Ok((ws, None));
    }
    let connected = expect_op(&mut ws, "connected").await?;
    if let Some(topic) = topic {
        let op = serde_json::json!({"op": "subscribe", "topic": topic, "ref": 1}).to_string();
        ws.send(Message::text(op))
            .await
            .map_err(|e| BenchError::Failed(format!("subscribing to {topic}: {e}")))?;
        expect_op(&mut ws, "subscribed").await?;
    }
    Ok((ws, Some(connected)))
}

/// Lets connect() choose the source port: bind() with port 0 would search the ephemeral range
/// for a port free of every bind, which slows to a crawl with thousands in use.
fn defer_port_choice(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` (a c_int we own) on a socket fd that `socket` keeps open.
    // Failing (an old kernel) only loses the optimisation.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits for a frame `{"op":<op>,...}` and returns it; an error frame or a close is a
/// refusal.
async fn expect_op(ws: &mut Ws, op: &str) -> Result<String, BenchError> {
    let want = format!("\"op\":\"{op}\"");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(&want) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Text(t))) if t.contains("\"op\":\"error\"") => {
                return Err(BenchError::Rejected(format!("the server answered {t}")))
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(BenchError::Rejected(format!(
                    "the server closed the connection with {code} {reason:?} before {op}"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(BenchError::Failed(format!("waiting for {op}: {e}")));
            }
            None => {
                return Err(BenchError::Failed(format!(
                    "the connection ended before {op}"
                )))
            }
        }
    }
}

/// Reads connection `i` until `stop`, counting our frames. On stop it sends a close frame and
/// waits briefly for the server's.
pub async fn read(mut ws: Ws, i: usize, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let shard = &stats.shards[i % SHARDS];
    let mut order = Order::default();
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if b.as_ref() == [0] {
                        // A Centrifugo Protobuf ping: answer with an empty command.
                        let _ = ws.send(Message::Binary(b)).await;
                    } else if let Some(ours) = tally::parse_bytes(&b) {
                        record(shard, &mut order, ours);
                    }
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "{}" => {
                    // A Centrifugo JSON ping: answer with an empty command.
                    let _ = ws.send(Message::text("{}")).await;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(ours) = tally::parse(t.as_str()) {
                        record(shard, &mut order, ours);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    *stats.closes.lock().entry(code).or_default() += 1;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    *stats.closes.lock().entry(1006).or_default() += 1;
                    return;
                }
            },
            _ = &mut stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    ws.close(None).await?;
                    while let Some(m) = ws.next().await {
                        if matches!(m?, Message::Close(_)) {
                            break;
                        }
                    }
                    Ok::<(), tungstenite::Error>(())
                })
                .await;
                return;
            }
        }
    }
}

/// Counts one delivery of ours, `(seq, sent_ns)`, and its latency.
fn record(shard: &Mutex<Shard>, order: &mut Order, (seq, sent_ns): (u64, u64)) {
    let now = unix_ns();
    let seen = order.see(seq);
    let latency_us = (now.saturating_sub(sent_ns) / 1000).max(1);
    let mut s = shard.lock();
    s.counts.record(seen, now);
    s.hist.saturating_record(latency_us);
}

/// Connection `i`'s place in the groups that role and topic calls address.
pub fn group(i: usize, groups: usize) -> usize {
    i % groups.max(1)
}

/// How many of `conns` connections belong to group `g`.
pub fn group_size(g: usize, conns: usize, groups: usize) -> u64 {
    let groups = groups.max(1);
    (conns / groups + usize::from(g < conns % groups)) as u64
}

pub fn opened(stats: &Stats) -> u64 {
    stats.opened.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes_add_up_to_the_connections() {
        for (conns, groups) in [(10, 3), (9, 3), (2, 5), (15_000, 10)] {
            let total: u64 = (0..groups).map(|g| group_size(g, conns, groups)).sum();
            assert_eq!(total, conns as u64);
            let counted = (0..conns).filter(|i| group(*i, groups) == 1).count() as u64;
            assert_eq!(counted, group_size(1, conns, groups));
        }
    }
}
