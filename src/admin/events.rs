//! `GET <path>/api/events`: the console's live stream, as server-sent events. First `series`
//! (the chart so far), then every second `stats` (the sampler's latest), and between them
//! `event`: each WatchEvents event of every kind, from the gRPC door's own WatchEvents (same
//! JSON as the HTTP API writes). The session is checked again every tick: when it ends (its
//! time, a sign-out on any node) the stream sends `end` and closes. A feed that falls behind
//! is opened again after a `notice`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::sampler::Sample;
use super::{session::Session, Admin, Refused};
use crate::proto::realtime_service_server::RealtimeService;
use crate::proto::{event::Kind, WatchEventsRequest};

type Feed = crate::grpc::EventStream;

struct Live {
    admin: Arc<Admin>,
    session: Session,
    stats: watch::Receiver<Option<Arc<Sample>>>,
    feed: Option<Feed>,
    /// What to send before anything else (the chart so far, the latest sample).
    first: Vec<Event>,
    /// The node is stopping: the stream ends (a shutdown never waits on a console).
    shutdown: watch::Receiver<bool>,
    ended: bool,
}

pub async fn stream(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let session = match admin.session(&headers).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (series, stats) = admin.sampler.watch();
    let mut first = vec![Event::default()
        .event("series")
        .data(serde_json::to_string(&series).unwrap_or_else(|_| "[]".into()))];
    // A running sampler's latest sample at once: the page has its numbers without waiting
    // for the next tick.
    if let Some(latest) = stats.borrow().as_ref() {
        let data = serde_json::to_string(&**latest).unwrap_or_default();
        first.push(Event::default().event("stats").data(data));
    }
    first.reverse();
    let feed = open_feed(&admin, &session).await;
    let live = Live {
        shutdown: admin.hub.shutdown_signal(),
        admin,
        session,
        stats,
        feed,
        first,
        ended: false,
    };
    let mut r = Sse::new(events(live))
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Every event kind, the users' transitions included, through the door's WatchEvents.
async fn open_feed(admin: &Admin, s: &Session) -> Option<Feed> {
    let every = [
        Kind::Connected,
        Kind::Disconnected,
        Kind::Subscribed,
        Kind::Unsubscribed,
        Kind::UserOnline,
        Kind::UserOffline,
    ];
    let mut req = tonic::Request::new(WatchEventsRequest {
        kinds: every.iter().map(|k| *k as i32).collect(),
    });
    *req.metadata_mut() = admin.metadata(s);
    match admin.door.watch_events(req).await {
        Ok(r) => Some(r.into_inner()),
        Err(e) => {
            tracing::debug!(error = %e.message(), "admin event feed not opened");
            None
        }
    }
}

fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(live, |mut st| async move {
        if st.ended {
            return None;
        }
        if let Some(first) = st.first.pop() {
            return Some((Ok(first), st));
        }
        loop {
            tokio::select! {
                _ = async { let _ = st.shutdown.wait_for(|down| *down).await; } => return None,
                changed = st.stats.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    if let Err(why) = st.admin.still_valid(&st.session).await {
                        st.ended = true;
                        let data = serde_json::json!({"message": why.to_string()}).to_string();
                        return Some((Ok(Event::default().event("end").data(data)), st));
                    }
                    let sample = st.stats.borrow_and_update().clone();
                    if let Some(sample) = sample {
                        if st.feed.is_none() {
                            st.feed = open_feed(&st.admin, &st.session).await;
                        }
                        let data = serde_json::to_string(&*sample).unwrap_or_default();
                        return Some((Ok(Event::default().event("stats").data(data)), st));
                    }
                }
                item = next(&mut st.feed) => match item {
                    Some(Ok(ev)) => {
                        let data = crate::grpc::json::encode("Event", &ev).unwrap_or_default();
                        return Some((Ok(Event::default().event("event").data(data)), st));
                    }
                    Some(Err(status)) => {
                        // Behind the feed (or the node stopping): open it again next tick.
                        st.feed = None;
                        let data = serde_json::json!({"message": status.message()}).to_string();
                        return Some((Ok(Event::default().event("notice").data(data)), st));
                    }
                    None => st.feed = None,
                },
            }
        }
    })
}

/// The feed's next event; never, while there is no feed.
async fn next(feed: &mut Option<Feed>) -> Option<Result<crate::proto::Event, tonic::Status>> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

impl Admin {
    /// Whether a session that opened a stream still holds: not past its end, not signed out.
    async fn still_valid(&self, s: &Session) -> Result<(), Refused> {
        if s.expires_at_ms <= crate::clock::now_ms() {
            return Err(super::session::SessionError::Expired.into());
        }
        match self.hub.admin_session_ended(&s.id).await {
            Ok(true) => Err(super::session::SessionError::Expired.into()),
            // The broker unreachable: the tick says so in its sample; the session stands.
            Ok(false) | Err(_) => Ok(()),
        }
    }
}
