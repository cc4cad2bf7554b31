//! Joining a topic without a lock across I/O: `begin_join` starts keeping what arrives for
//! the joiner, the shell reads history, and `finish_join` merges the two by offset,
//! deduplicated and contiguous, queues the replay and the reply, and makes the connection a
//! live subscriber. Pure, like the rest of the table.

use std::sync::Arc;

use super::*;
use crate::core::stream;

impl<O: Outbox> Topics<O>
where
    O::Item: Clone,
{
    /// Starts subscribing `conn` to `topic` (at most `max` subscriptions per connection, 0: no
    /// limit): from now on, publications arriving here are kept for it.
    pub fn begin_join(
        &self,
        topic: &str,
        conn: &Arc<Conn<O>>,
        max: usize,
    ) -> Result<JoinStart, SubscribeRefused> {
        let mut mine = conn.topic_set();
        if conn.is_closing() {
            return Err(SubscribeRefused::Closing);
        }
        // A user stream is the connection's own (joined once, at connect) and is not kept in
        // its topic set: `leave_all` always leaves it. The set's lock is still what orders
        // this join against that leave.
        let own = !stream::is_topic(topic);
        if !own && mine.contains(topic) {
            return Ok(JoinStart::Already);
        }
        // A user stream is joined like a topic but is not one: it does not count.
        if max > 0 && mine.iter().filter(|n| stream::is_topic(n)).count() >= max {
            return Err(SubscribeRefused::TooMany);
        }
        let id = self.tickets.fetch_add(1, Ordering::Relaxed);
        let mut map = self.shard(topic).write();
        let state = map.entry(topic.to_owned()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            Arc::default()
        });
        state.lock().joining.push(Joiner {
            ticket: id,
            conn: Arc::clone(conn),
            seen: Vec::new(),
        });
        drop(map);
        if !own {
            mine.insert(topic.to_owned());
        }
        Ok(JoinStart::Joining(Ticket {
            topic: topic.to_owned(),
            id,
            seq: conn.info.seq,
        }))
    }

    /// Abandons a join (its history read failed): the connection is not subscribed. False
    /// when the join had already ended (the connection left).
    pub fn cancel_join(&self, ticket: Ticket, conn: &Conn<O>) -> bool {
        let mut mine = conn.topic_set();
        let Some(state) = self.get(&ticket.topic) else {
            return false;
        };
        let mut t = state.lock();
        let before = t.joining.len();
        t.joining.retain(|j| j.ticket != ticket.id);
        let cancelled = t.joining.len() != before;
        if cancelled {
            mine.remove(&ticket.topic);
        }
        let empty = t.is_empty();
        drop(t);
        drop(mine);
        if empty {
            self.drop_if_empty(&ticket.topic);
        }
        cancelled
    }

    /// Finishes a join with the history store's answer. `reply(offset, epoch, recovered)` makes
    /// the `subscribed` frame, queued after the replay (`None`: no reply is queued, as when a
    /// connection joins its user stream and `connected`, written before its queue, says where
    /// it stands); `reset(offset, epoch)` makes the frame that tells a subscriber its position
    /// was lost. `None` when the connection left while joining.
    pub fn finish_join(
        &self,
        ticket: Ticket,
        read: HistoryRead<O::Item>,
        since: Option<(u64, &str)>,
        reply: impl FnOnce(u64, &str, Option<bool>) -> Option<O::Item>,
        reset: impl Fn(u64, &str) -> O::Item,
    ) -> Option<Joined<O>> {
        let state = self.get(&ticket.topic)?;
        let mut t = state.lock();
        let idx = t.joining.iter().position(|j| j.ticket == ticket.id)?;
        let joiner = t.joining.swap_remove(idx);
        if t.joining.is_empty() {
            // Most topics are joined once in a while: no capacity kept between joins.
            t.joining = Vec::new();
        }
        let mut overflowed = Vec::new();
        let stream = align_stream(&mut t, &read, &joiner.seen, reset, &mut overflowed);
        let start = start_point(&stream, read, since, &joiner.seen);
        // The reply says where the subscriber stands: the read's top, or where the newer live
        // epoch started.
        let reply_offset = if start.same_epoch {
            start.latest
        } else {
            start.after
        };
        let mut candidates = start.candidates;
        candidates.extend(
            joiner
                .seen
                .into_iter()
                .filter(|(e, _, _)| *e == stream.epoch)
                .map(|(_, o, f)| (o, f)),
        );
        candidates.sort_by_key(|(o, _)| *o);
        let conn = joiner.conn;
        let reply_epoch = stream.epoch.to_string();
        let reply = |offset| reply(offset, &reply_epoch, start.recovered);
        let r = replay(&conn, candidates, start.after, reply_offset, reply);
        if r.full && conn.mark_closing() {
            overflowed.push(Arc::clone(&conn));
        }
        let after = r.last.max(reply_offset);
        if stream::is_topic(&ticket.topic) {
            t.user_came(name_hash(&conn.info.user_id));
        }
        t.subscribers.insert(
            ticket.seq,
            Sub {
                conn,
                after,
                listen: false,
            },
        );
        Some(Joined {
            offset: reply_offset,
            epoch: reply_epoch,
            recovered: start.recovered,
            replayed: r.replayed,
            overflowed,
        })
    }
}

/// Brings the node's stream in line with a join's read when it has none, or an older epoch
/// that no live publication since confirmed (then every subscriber is told its position was
/// lost). Returns the stream as it stands.
fn align_stream<O: Outbox>(
    t: &mut TopicState<O>,
    read: &HistoryRead<O::Item>,
    seen: &[(Arc<str>, u64, O::Item)],
    reset: impl Fn(u64, &str) -> O::Item,
    overflowed: &mut Vec<Arc<Conn<O>>>,
) -> Stream
where
    O::Item: Clone,
{
    let from_read = || Stream {
        epoch: Arc::from(read.epoch.as_str()),
        last: read.latest,
    };
    let live_epoch_seen = |e: &Arc<str>| seen.iter().any(|(se, _, _)| se == e);
    match &t.stream {
        None => t.stream = Some(from_read()),
        Some(s) if *s.epoch != *read.epoch && !live_epoch_seen(&s.epoch) => {
            let f = reset(read.latest, &read.epoch);
            for sub in t.subscribers.values_mut() {
                sub.after = read.latest;
                push_overflow(&sub.conn, &f, overflowed);
            }
            t.pending.clear();
            t.stream = Some(from_read());
        }
        Some(_) => {}
    }
    // Set just above when absent.
    t.stream.clone().unwrap_or_else(from_read)
}

/// Where a joining subscriber starts, and what history gave toward it.
struct StartPoint<F> {
    /// The last offset it is taken to have (it gets what follows).
    after: u64,
    recovered: Option<bool>,
    /// KeptPublication publications to replay, by offset.
    candidates: Vec<(u64, F)>,
    /// Whether the live stream is still in the read's epoch.
    same_epoch: bool,
    latest: u64,
}

/// Where a join starts: from `since` when the read proves continuity (same epoch, complete,
/// not ahead), else from the read's top (`recovered: false` when a position was asked); when
/// the live stream moved to a newer epoch after the read, from where that epoch started.
fn start_point<F>(
    stream: &Stream,
    read: HistoryRead<F>,
    since: Option<(u64, &str)>,
    seen: &[(Arc<str>, u64, F)],
) -> StartPoint<F> {
    let latest = read.latest;
    if *stream.epoch != *read.epoch {
        let first = seen
            .iter()
            .filter(|(e, _, _)| *e == stream.epoch)
            .map(|(_, o, _)| *o)
            .min()
            .unwrap_or(stream.last + 1);
        return StartPoint {
            after: first.saturating_sub(1),
            recovered: since.map(|_| false),
            candidates: Vec::new(),
            same_epoch: false,
            latest,
        };
    }
    let (after, recovered, candidates) = match since {
        Some((o, e)) if e == read.epoch && read.complete && o <= latest => {
            (o, Some(true), read.pubs)
        }
        Some(_) => (latest, Some(false), Vec::new()),
        None => (latest, None, Vec::new()),
    };
    StartPoint {
        after,
        recovered,
        candidates,
        same_epoch: true,
        latest,
    }
}

/// What a replay queued.
struct Replayed {
    /// The last offset queued (or the start when none was).
    last: u64,
    /// Publications up to the reply's offset that were queued.
    replayed: usize,
    /// Whether the queue filled up.
    full: bool,
}

/// Queues the contiguous run of `candidates` after `after`, with the reply (made by `reply`)
/// placed before the first publication beyond `reply_offset`, or last.
fn replay<O: Outbox>(
    conn: &Arc<Conn<O>>,
    candidates: Vec<(u64, O::Item)>,
    after: u64,
    reply_offset: u64,
    reply: impl FnOnce(u64) -> Option<O::Item>,
) -> Replayed {
    let mut next = after + 1;
    let mut replayed = 0;
    let mut full = false;
    let mut reply = Some(reply);
    for (o, f) in candidates {
        if o < next {
            continue;
        }
        if o > next {
            break;
        }
        if o > reply_offset {
            if let Some(r) = reply.take().and_then(|r| r(reply_offset)) {
                full |= offer(conn, &r) != Offer::Queued;
            }
        }
        if !full {
            full |= offer(conn, &f) != Offer::Queued;
            if o <= reply_offset {
                replayed += 1;
            }
        }
        next = o + 1;
    }
    if let Some(r) = reply.take().and_then(|r| r(reply_offset)) {
        full |= offer(conn, &r) != Offer::Queued;
    }
    Replayed {
        last: next - 1,
        replayed,
        full,
    }
}
