//! The gRPC door: `RealtimeService` over tonic, plus `grpc.health.v1` and server reflection.
//! Each RPC checks the API key, translates its request into one hub call, and maps the
//! result back; every call is counted and timed by method and status code.

mod convert;
pub mod json;
mod status;

use secrecy::ExposeSecret;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::core::message::MessageInput;
use crate::core::model::{HistoryQuery, ListFilter, Who};
use crate::hub::batch::{BatchItem, Chains, Stopped};
use crate::hub::Hub;
use crate::proto::realtime_service_server::{RealtimeService, RealtimeServiceServer};
use crate::proto::{self, event::Kind};
use status::{required, to_status};

/// The encoded descriptor set of our proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/realtime_descriptor.bin"));

/// The service name health checks use.
pub const SERVICE_NAME: &str = "boundary.realtime.v1.RealtimeService";

pub struct GrpcDoor {
    hub: Arc<Hub>,
}

impl GrpcDoor {
    pub fn new(hub: Arc<Hub>) -> Self {
        GrpcDoor { hub }
    }

    /// The tonic service, with the decoding limit above the payload limit so that an
    /// oversized payload gets INVALID_ARGUMENT naming the field rather than a transport error.
    pub fn into_service(self) -> RealtimeServiceServer<Self> {
        // Twice the largest batch, so that one just over limits.max_batch_bytes still decodes
        // and gets RESOURCE_EXHAUSTED naming the key.
        let l = &self.hub.config.limits;
        let limit = (l.max_payload_bytes * 2 + 64 * 1024)
            .max(4 << 20)
            .max(l.max_batch_bytes.saturating_mul(2));
        RealtimeServiceServer::new(self).max_decoding_message_size(limit)
    }

    fn authorize(&self, md: &MetadataMap) -> Result<(), Status> {
        let grpc = &self.hub.config.grpc;
        if grpc.allow_unauthenticated {
            return Ok(());
        }
        let value = md.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing metadata authorization: Bearer <api-key>")
        })?;
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <api-key>\""))?;
        // Compare with every key in constant time, without stopping at the first match.
        let matched = grpc
            .api_keys
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| {
                acc | k.expose_secret().as_bytes().ct_eq(key.as_bytes())
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid API key"))
        }
    }

    /// Runs one RPC: authorization, the handler, metrics.
    async fn handle<T, R, F, Fut>(
        &self,
        method: &'static str,
        req: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let start = Instant::now();
        let out = match self.authorize(req.metadata()) {
            Ok(()) => f(req.into_inner()).await,
            Err(s) => {
                let remote = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
                self.hub.refused(crate::node::refusals::Refusal {
                    what: "API call refused",
                    code: 401,
                    reason: s.message(),
                    remote_addr: &remote,
                    user_id: None,
                });
                Err(s)
            }
        };
        let code = out.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.hub.metrics().grpc(method, code, start.elapsed());
        out.map(Response::new)
    }

    async fn send(
        &self,
        route: Who,
        message: Option<proto::Message>,
    ) -> Result<proto::SendResponse, Status> {
        let m = message.ok_or_else(|| required("message"))?;
        let sent = self
            .hub
            .send(
                route,
                MessageInput {
                    kind: &m.r#type,
                    payload_json: &m.payload_json,
                    id: &m.id,
                },
            )
            .await
            .map_err(to_status)?;
        // Only a SendToUser with user streams on has a position (0 and "" otherwise).
        let (offset, epoch) = sent
            .position
            .map_or((0, String::new()), |p| (p.offset, p.epoch));
        Ok(proto::SendResponse {
            message_id: sent.message_id,
            connections: sent.connections,
            offset,
            epoch,
        })
    }
}

/// Maps a request's `target` oneof (`connection_id` or `user_id`; each RPC has its own
/// generated type) to the hub's `Who`; unset is INVALID_ARGUMENT naming `target`.
macro_rules! command_target {
    ($target:expr, $ty:path) => {{
        use $ty as Target;
        match $target {
            Some(Target::ConnectionId(id)) => Ok(Who::Connection(id)),
            Some(Target::UserId(user)) => Ok(Who::User(user)),
            None => Err(Status::invalid_argument(
                "target: set connection_id or user_id",
            )),
        }
    }};
}

fn non_empty(field: &str, value: String) -> Result<String, Status> {
    if value.is_empty() {
        Err(required(field))
    } else {
        Ok(value)
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;
type ResultStream = Pin<Box<dyn Stream<Item = Result<proto::PublishResult, Status>> + Send>>;

/// The most items of one PublishBatch.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// The most PublishStream items read ahead of their answers: the stream's flow control
/// holds a client that sends faster than the service publishes.
const STREAM_WINDOW: usize = 512;

/// A publication of a batch or a stream, for the hub.
fn batch_item(r: proto::PublishRequest) -> BatchItem {
    BatchItem {
        topic: r.topic,
        message: r.message.map(|m| (m.r#type, m.payload_json, m.id)),
    }
}

/// One item's answer: its response, or exactly the code and message a unary Publish of it
/// would have answered.
fn publish_result(
    index: u32,
    r: Result<crate::hub::PublishOutcome, crate::core::CoreError>,
) -> proto::PublishResult {
    match r {
        Ok(p) => proto::PublishResult {
            index,
            response: Some(proto::PublishResponse {
                message_id: p.message_id,
                offset: p.offset,
                epoch: p.epoch,
                connections: p.connections,
            }),
            code: 0,
            error: String::new(),
        },
        Err(e) => {
            let s = to_status(e);
            proto::PublishResult {
                index,
                response: None,
                code: s.code() as u32,
                error: s.message().to_owned(),
            }
        }
    }
}

/// Answers a PublishStream: each item read starts at once (after the earlier items of its
/// topic: topic order), at most [`STREAM_WINDOW`] running ahead of their answers, which go out
/// in item order; past that it reads on only as answers go out, so a fast client is held back
/// by the transport's flow control. When the client half-closes, everything read is answered
/// and the stream ends OK; at shutdown, what was read is answered and the stream ends
/// UNAVAILABLE.
fn publish_stream(
    hub: Arc<Hub>,
    mut incoming: tonic::Streaming<proto::PublishRequest>,
) -> ResultStream {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_WINDOW);
    tokio::spawn(async move {
        use futures_util::stream::{FuturesOrdered, StreamExt};
        let mut chains = Chains::default();
        let mut running = FuturesOrdered::new();
        let mut index = 0u32;
        let mut shutdown = hub.shutdown_signal();
        // Why reading stopped: the client half-closed (Ok), its stream failed, or shutdown.
        let mut end: Option<Result<(), Status>> = None;
        while end.is_none() || !running.is_empty() {
            tokio::select! {
                biased;
                Some(r) = running.next(), if !running.is_empty() => {
                    if tx.send(Ok(publish_result(index, r))).await.is_err() {
                        return; // the client went away
                    }
                    index = index.wrapping_add(1);
                }
                m = incoming.message(), if end.is_none() && running.len() < STREAM_WINDOW => {
                    match m {
                        Ok(Some(r)) => running.push_back(hub.publish_chained(&mut chains, batch_item(r))),
                        Ok(None) => end = Some(Ok(())),
                        Err(s) => end = Some(Err(s)),
                    }
                }
                _ = async { let _ = shutdown.wait_for(|down| *down).await; }, if end.is_none() => {
                    end = Some(Err(Status::unavailable("the service is shutting down")));
                }
            }
        }
        // Everything read is answered: the stream ends OK, or with why it stopped.
        if let Some(Err(s)) = end {
            let _ = tx.send(Err(s)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl RealtimeService for GrpcDoor {
    async fn send_to_user(
        &self,
        req: Request<proto::SendToUserRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        self.handle("SendToUser", req, |r| async move {
            let user = non_empty("user_id", r.user_id)?;
            self.send(Who::User(user), r.message).await
        })
        .await
    }

    async fn send_to_role(
        &self,
        req: Request<proto::SendToRoleRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        self.handle("SendToRole", req, |r| async move {
            let role = non_empty("role", r.role)?;
            self.send(Who::Role(role), r.message).await
        })
        .await
    }

    async fn send_to_connection(
        &self,
        req: Request<proto::SendToConnectionRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        self.handle("SendToConnection", req, |r| async move {
            let id = non_empty("connection_id", r.connection_id)?;
            self.send(Who::Connection(id), r.message).await
        })
        .await
    }

    async fn broadcast(
        &self,
        req: Request<proto::BroadcastRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        self.handle("Broadcast", req, |r| async move {
            self.send(Who::All, r.message).await
        })
        .await
    }

    async fn publish(
        &self,
        req: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        self.handle("Publish", req, |r| async move {
            let m = r.message.ok_or_else(|| required("message"))?;
            let input = MessageInput {
                kind: &m.r#type,
                payload_json: &m.payload_json,
                id: &m.id,
            };
            let p = self.hub.publish(&r.topic, input).await.map_err(to_status)?;
            Ok(proto::PublishResponse {
                message_id: p.message_id,
                offset: p.offset,
                epoch: p.epoch,
                connections: p.connections,
            })
        })
        .await
    }

    async fn list_connections(
        &self,
        req: Request<proto::ListConnectionsRequest>,
    ) -> Result<Response<proto::ListConnectionsResponse>, Status> {
        self.handle("ListConnections", req, |r| async move {
            let some = |s: String| Some(s).filter(|s| !s.is_empty());
            let filter = ListFilter {
                user: some(r.user_id),
                role: some(r.role),
                topic: some(r.topic),
            };
            let page = self
                .hub
                .list(filter, r.page_size, &r.page_token)
                .await
                .map_err(to_status)?;
            Ok(proto::ListConnectionsResponse {
                connections: page
                    .connections
                    .into_iter()
                    .map(convert::connection)
                    .collect(),
                next_page_token: page.next_page_token,
                total: page.total as u32,
            })
        })
        .await
    }

    async fn get_connection(
        &self,
        req: Request<proto::GetConnectionRequest>,
    ) -> Result<Response<proto::Connection>, Status> {
        self.handle("GetConnection", req, |r| async move {
            let id = non_empty("connection_id", r.connection_id)?;
            let conn = self.hub.get(&id).await.map_err(to_status)?;
            Ok(convert::connection(conn))
        })
        .await
    }

    async fn get_stats(
        &self,
        req: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        self.handle("GetStats", req, |_| async move {
            let s = self.hub.stats().await.map_err(to_status)?;
            Ok(proto::Stats {
                connections: s.connections,
                users: s.users,
                topics: s.topics,
                messages_sent: s.messages_sent,
                messages_dropped: s.messages_dropped,
                nodes: s.nodes,
                node_id: s.node_id,
                started_at: Some(crate::clock::timestamp(s.started_at_ms)),
            })
        })
        .await
    }

    async fn presence(
        &self,
        req: Request<proto::PresenceRequest>,
    ) -> Result<Response<proto::PresenceResponse>, Status> {
        self.handle("Presence", req, |r| async move {
            let page = self
                .hub
                .presence_page(&r.topic, r.page_size, &r.page_token, r.counts_only)
                .await
                .map_err(to_status)?;
            let (users, connections) = (page.users as u32, page.connections as u32);
            Ok(proto::PresenceResponse {
                connections,
                next_page_token: page.next_page_token,
                clients: page
                    .entries
                    .into_iter()
                    .map(|c| proto::presence_response::Client {
                        connection_id: c.connection_id,
                        user_id: c.user_id,
                    })
                    .collect(),
                users,
            })
        })
        .await
    }

    async fn history(
        &self,
        req: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        self.handle("History", req, |r| async move {
            let q = HistoryQuery {
                since: Some(r.since_offset),
                limit: match r.limit {
                    0 => 100,
                    n => n as usize,
                },
                reverse: false,
            };
            let page = self.hub.history(&r.topic, q).await.map_err(to_status)?;
            Ok(proto::HistoryResponse {
                publications: page
                    .publications
                    .into_iter()
                    .map(|p| proto::Publication {
                        offset: p.offset,
                        message_id: p.message_id,
                        r#type: p.kind,
                        payload_json: p.payload_json,
                        published_at: Some(crate::clock::timestamp(p.published_at_ms)),
                    })
                    .collect(),
                epoch: page.epoch,
                latest_offset: page.latest,
            })
        })
        .await
    }

    async fn disconnect(
        &self,
        req: Request<proto::DisconnectRequest>,
    ) -> Result<Response<proto::DisconnectResponse>, Status> {
        self.handle("Disconnect", req, |r| async move {
            let target = command_target!(r.target, proto::disconnect_request::Target)?;
            let n = self
                .hub
                .disconnect(target, r.code, &r.reason)
                .await
                .map_err(to_status)?;
            Ok(proto::DisconnectResponse { disconnected: n })
        })
        .await
    }

    async fn subscribe(
        &self,
        req: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        self.handle("Subscribe", req, |r| async move {
            let target = command_target!(r.target, proto::subscribe_request::Target)?;
            let n = self
                .hub
                .subscribe_selected(&r.topic, target)
                .await
                .map_err(to_status)?;
            Ok(proto::SubscribeResponse { connections: n })
        })
        .await
    }

    async fn unsubscribe(
        &self,
        req: Request<proto::UnsubscribeRequest>,
    ) -> Result<Response<proto::UnsubscribeResponse>, Status> {
        self.handle("Unsubscribe", req, |r| async move {
            let target = command_target!(r.target, proto::unsubscribe_request::Target)?;
            let n = self
                .hub
                .unsubscribe_selected(&r.topic, target)
                .await
                .map_err(to_status)?;
            Ok(proto::UnsubscribeResponse { connections: n })
        })
        .await
    }

    async fn publish_batch(
        &self,
        req: Request<proto::PublishBatchRequest>,
    ) -> Result<Response<proto::PublishBatchResponse>, Status> {
        self.handle("PublishBatch", req, |r| async move {
            let n = r.items.len();
            if n == 0 || n > MAX_BATCH_ITEMS {
                return Err(Status::invalid_argument(format!(
                    "items: {n} items; a batch has 1 to {MAX_BATCH_ITEMS}"
                )));
            }
            let size = prost::Message::encoded_len(&r);
            let max = self.hub.config.limits.max_batch_bytes;
            if size > max {
                return Err(Status::resource_exhausted(format!(
                    "the request is {size} bytes, over limits.max_batch_bytes ({max})"
                )));
            }
            let items: Vec<BatchItem> = r.items.into_iter().map(batch_item).collect();
            let results = self.hub.publish_many(&items, &mut Stopped::default()).await;
            Ok(proto::PublishBatchResponse {
                results: results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| publish_result(i as u32, r))
                    .collect(),
            })
        })
        .await
    }

    type PublishStreamStream = ResultStream;

    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<proto::PublishRequest>>,
    ) -> Result<Response<ResultStream>, Status> {
        self.handle("PublishStream", req, |incoming| async move {
            Ok(publish_stream(Arc::clone(&self.hub), incoming))
        })
        .await
    }

    async fn get_users(
        &self,
        req: Request<proto::GetUsersRequest>,
    ) -> Result<Response<proto::GetUsersResponse>, Status> {
        self.handle("GetUsers", req, |r| async move {
            let users = self.hub.users(r.user_ids).await.map_err(to_status)?;
            Ok(proto::GetUsersResponse {
                users: users.into_iter().map(convert::user).collect(),
            })
        })
        .await
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.handle("WatchEvents", req, |r| async move {
            let mut kinds = Vec::with_capacity(r.kinds.len());
            for k in r.kinds {
                match Kind::try_from(k) {
                    Ok(Kind::Unspecified) | Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "kinds: {k} is not an event kind"
                        )))
                    }
                    Ok(kind) => kinds.push(kind),
                }
            }
            if self.hub.is_shutting_down() {
                return Err(Status::unavailable("the service is shutting down"));
            }
            let events = self.hub.watch().await.map_err(to_status)?;
            Ok(watch_stream(Arc::clone(&self.hub), events, kinds))
        })
        .await
    }
}

struct WatchState {
    hub: Arc<Hub>,
    events: tokio::sync::broadcast::Receiver<Arc<crate::core::model::ConnEvent>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    kinds: Vec<Kind>,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        self.hub.unwatch();
    }
}

/// Streams events straight from the node's broadcast channel: nothing queues per watcher
/// beyond that channel, and a watcher that falls behind it is ended with RESOURCE_EXHAUSTED
/// (delivery never waits for a watcher).
fn watch_stream(
    hub: Arc<Hub>,
    events: tokio::sync::broadcast::Receiver<Arc<crate::core::model::ConnEvent>>,
    kinds: Vec<Kind>,
) -> EventStream {
    let state = WatchState {
        events,
        shutdown: hub.shutdown_signal(),
        hub,
        kinds,
    };
    Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut st = state?;
            loop {
                tokio::select! {
                    biased;
                    _ = async { let _ = st.shutdown.wait_for(|down| *down).await; } => {
                        return Some((Err(Status::unavailable("the service is shutting down")), None));
                    }
                    ev = st.events.recv() => match ev {
                        Ok(ev) => {
                            let kind = convert::kind(ev.kind);
                            // No kinds: version 1's four (user transitions only when named).
                            let wanted = match st.kinds.is_empty() {
                                true => !ev.kind.is_user(),
                                false => st.kinds.contains(&kind),
                            };
                            if wanted {
                                let out = convert::event(&ev);
                                return Some((Ok(out), Some(st)));
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            let msg = format!("watcher too slow: {n} events were dropped; call WatchEvents again");
                            return Some((Err(Status::resource_exhausted(msg)), None));
                        }
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        },
    ))
}
