//! Parked user streams. A connection whose user stream is empty when it joins (its user was
//! never sent a direct message, or not for a day) waits here, in about 50 bytes, instead of
//! in the stream's state in the table (about 330 with its map slot and name): most users of a
//! push service are sent nothing while connected, and every connection joins its user's
//! stream. The stream's first publication here adopts every parked connection of its user
//! into the table before it is delivered, so a parked connection misses nothing. Pure.
//!
//! Each move is one critical section under the parked shard's lock, taken inside the stream
//! state's lock (the order is: a topic's state, then a parked shard): parking, only while the
//! state has no subscriber and no stream and the joiner saw nothing arrive; adopting, with the
//! state that will hold them locked; and unparking a closing connection. Parking checks
//! `is_closing` under that lock and a closing connection is unparked after it is marked, so a
//! connection that left is never parked after.

use std::sync::Arc;

use super::*;
use crate::core::stream;

/// A connection parked on its user stream at offset 0 of `epoch`.
pub(super) struct Parked<O> {
    conn: Arc<Conn<O>>,
    /// The epoch it was told, as a number ([`stream::epoch_number`]).
    epoch: u32,
}

/// Parked connections by their stream name's hash (names that share a hash share an entry;
/// adopting picks the connections of the stream's own user).
pub(super) type ParkedShard<O> = Mutex<HashMap<u64, Subs<Parked<O>>>>;

impl<O: Outbox> Topics<O>
where
    O::Item: Clone,
{
    fn parked_shard(&self, key: u64) -> &ParkedShard<O> {
        &self.parked[(key as usize) % SHARDS]
    }

    /// Finishes a connection's join of its user stream: parked when the stream is empty and
    /// nothing else holds it here, else as [`Topics::finish_join`] does (no reply: `connected`
    /// says where the connection stands). `None` when the connection left while joining.
    pub fn finish_or_park(
        &self,
        ticket: Ticket,
        read: HistoryRead<O::Item>,
        since: Option<(u64, &str)>,
        reset: impl Fn(u64, &str) -> O::Item,
    ) -> Option<Joined<O>> {
        let epoch = stream::epoch_number(&read.epoch).filter(|_| read.latest == 0);
        if let Some(epoch) = epoch {
            let state = self.get(&ticket.topic)?;
            let mut t = state.lock();
            let idx = t.joining.iter().position(|j| j.ticket == ticket.id)?;
            let quiet =
                t.subscribers.is_empty() && t.stream.is_none() && t.joining[idx].seen.is_empty();
            let key = self.hasher.hash_one(&ticket.topic);
            let mut parked = self.parked_shard(key).lock();
            if quiet && !t.joining[idx].conn.is_closing() {
                let joiner = t.joining.swap_remove(idx);
                parked.entry(key).or_default().insert(
                    ticket.seq,
                    Parked {
                        conn: joiner.conn,
                        epoch,
                    },
                );
                drop(parked);
                if t.joining.is_empty() {
                    t.joining = Vec::new();
                }
                let empty = t.is_empty();
                drop(t);
                if empty {
                    self.drop_if_empty(&ticket.topic);
                }
                let recovered =
                    since.map(|(o, e)| e == read.epoch && read.complete && o <= read.latest);
                return Some(Joined {
                    offset: 0,
                    epoch: read.epoch,
                    recovered,
                    replayed: 0,
                    overflowed: Vec::new(),
                });
            }
        }
        self.finish_join(ticket, read, since, |_, _, _| None, reset)
    }

    /// Before a publication of user stream `topic` is handed to the table: its user's parked
    /// connections become subscribers at offset 0 of the epoch they were told (one told
    /// another epoch, or behind where the stream already stands here, is told its position
    /// was lost by `reset`). Returns the connections whose queue overflowed.
    pub fn adopt(&self, topic: &str, reset: impl Fn(u64, &str) -> O::Item) -> Vec<Arc<Conn<O>>> {
        let mut overflowed = Vec::new();
        let Some(user) = stream::user_of(topic) else {
            return overflowed;
        };
        let key = self.hasher.hash_one(topic);
        if !self.parked_shard(key).lock().contains_key(&key) {
            return overflowed;
        }
        let mut map = self.shard(topic).write();
        let state = Arc::clone(map.entry(topic.to_owned()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            Arc::default()
        }));
        let mut t = state.lock();
        drop(map);
        let taken = {
            let mut parked = self.parked_shard(key).lock();
            let taken = match parked.get_mut(&key) {
                Some(list) => list.take_where(|p| *p.conn.info.user_id == *user),
                None => Vec::new(),
            };
            if parked.get(&key).is_some_and(|l| l.is_empty()) {
                parked.remove(&key);
            }
            taken
        };
        for (seq, p) in taken {
            let told = stream::epoch_text(p.epoch);
            let after = match &t.stream {
                None => {
                    t.stream = Some(Stream {
                        epoch: Arc::from(told.as_str()),
                        last: 0,
                    });
                    0
                }
                Some(s) if *s.epoch == *told && s.last == 0 => 0,
                Some(s) => {
                    push_overflow(&p.conn, &reset(s.last, &s.epoch), &mut overflowed);
                    s.last
                }
            };
            t.subscribers.insert(
                seq,
                Sub {
                    conn: p.conn,
                    after,
                    listen: false,
                },
            );
        }
        let empty = t.is_empty();
        drop(t);
        if empty {
            self.drop_if_empty(topic);
        }
        overflowed
    }

    /// Takes a closing connection out of the parked ones; true when it was parked.
    pub(super) fn unpark(&self, topic: &str, seq: u64) -> bool {
        let key = self.hasher.hash_one(topic);
        let mut parked = self.parked_shard(key).lock();
        let Some(list) = parked.get_mut(&key) else {
            return false;
        };
        let was = list.remove(seq).is_some();
        if list.is_empty() {
            parked.remove(&key);
        }
        was
    }

    /// The epoch a connection parked on user stream `topic` was told (it stands at offset 0).
    pub(super) fn parked_at(&self, topic: &str) -> Option<String> {
        let user = stream::user_of(topic)?;
        let key = self.hasher.hash_one(topic);
        let parked = self.parked_shard(key).lock();
        parked
            .get(&key)?
            .values()
            .find(|p| *p.conn.info.user_id == *user)
            .map(|p| stream::epoch_text(p.epoch))
    }

    /// Every parked stream: (name, epoch, 0).
    pub(super) fn parked_positions(&self) -> Vec<(String, String, u64)> {
        let mut out = std::collections::BTreeMap::new();
        for shard in self.parked.iter() {
            for list in shard.lock().values() {
                for p in list.values() {
                    out.entry(stream::of_user(&p.conn.info.user_id))
                        .or_insert_with(|| stream::epoch_text(p.epoch));
                }
            }
        }
        out.into_iter().map(|(n, e)| (n, e, 0)).collect()
    }

    /// How many connections are parked (for tests and metrics).
    pub fn parked_len(&self) -> usize {
        self.parked
            .iter()
            .map(|s| s.lock().values().map(|l| l.values().count()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::close::Origin;
    use crate::core::registry::{ConnInfo, Offer};

    struct Rec(Mutex<Vec<String>>);

    impl Outbox for Rec {
        type Item = Arc<String>;
        fn offer(&self, f: &Arc<String>) -> Offer {
            self.0.lock().push(f.to_string());
            Offer::Queued
        }
        fn close_from(&self, _: u16, _: &str, _: Origin) {}
        fn ping(&self) {}
    }

    fn conn(seq: u64, user: &str) -> Arc<Conn<Rec>> {
        Arc::new(Conn::new(
            ConnInfo {
                id: format!("n.{seq:016x}"),
                seq,
                user_id: user.into(),
                roles: vec![],
                topic_patterns: vec![],
                metadata: Default::default(),
                connected_at_ms: 0,
                remote_addr: String::new(),
                user_agent: String::new(),
                protocol: Default::default(),
            },
            None,
            Rec(Mutex::new(Vec::new())),
        ))
    }

    fn got(c: &Conn<Rec>) -> Vec<String> {
        c.outbox.0.lock().clone()
    }

    fn reset(o: u64, e: &str) -> Arc<String> {
        Arc::new(format!("reset@{o}/{e}"))
    }

    const E: &str = "0000000e";

    fn read(epoch: &str, latest: u64) -> HistoryRead<Arc<String>> {
        HistoryRead {
            epoch: epoch.into(),
            latest,
            pubs: vec![],
            complete: true,
        }
    }

    /// Joins `c` to its user stream with `read` as the store's answer.
    fn connect(t: &Topics<Rec>, c: &Arc<Conn<Rec>>, r: HistoryRead<Arc<String>>) -> Joined<Rec> {
        let name = stream::of_user(&c.info.user_id);
        let JoinStart::Joining(ticket) = t.begin_join(&name, c, 0).unwrap() else {
            panic!("a user stream is joined once")
        };
        t.finish_or_park(ticket, r, None, reset).unwrap()
    }

    fn publish(t: &Topics<Rec>, user: &str, epoch: &str, offset: u64) -> Arrival<Rec> {
        let name = stream::of_user(user);
        let overflowed = t.adopt(&name, reset);
        assert!(overflowed.is_empty());
        t.on_publication(
            &name,
            LivePosition { epoch, offset },
            &Arc::new(format!("p{offset}")),
            reset,
        )
    }

    #[test]
    fn an_empty_stream_parks_and_its_first_publication_adopts_every_connection_of_its_user() {
        let t = Topics::new();
        let (a1, a2, b) = (conn(1, "ann"), conn(2, "ann"), conn(3, "bob"));
        for c in [&a1, &a2, &b] {
            let j = connect(&t, c, read(E, 0));
            assert_eq!((j.offset, j.epoch.as_str(), j.recovered), (0, E, None));
        }
        assert_eq!(
            (t.len(), t.parked_len()),
            (0, 3),
            "nothing held in the table"
        );
        assert!(
            a1.topic_set().is_empty(),
            "a user stream is not a topic of the set"
        );
        assert_eq!(t.position("#ann"), Some((E.to_owned(), 0)));
        assert_eq!(
            t.positions(),
            [("#ann".into(), E.into(), 0), ("#bob".into(), E.into(), 0)]
        );

        assert_eq!(publish(&t, "ann", E, 1).queued, 2);
        assert_eq!((t.len(), t.parked_len()), (1, 1), "bob stays parked");
        assert_eq!(publish(&t, "ann", E, 2).queued, 2);
        assert_eq!(got(&a1), ["p1", "p2"]);
        assert_eq!(got(&a2), ["p1", "p2"]);
        assert!(got(&b).is_empty());

        // Leaving: the stream is reported left whether held or parked.
        assert_eq!(t.leave_all(&a1), ["#ann"]);
        assert_eq!(t.leave_all(&b), ["#bob"]);
        assert_eq!(t.leave_all(&b), Vec::<String>::new(), "once");
        assert_eq!(t.parked_len(), 0);
        assert_eq!(t.leave_all(&a2), ["#ann"]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_publication_in_another_epoch_or_after_a_gap_is_never_silent() {
        let t = Topics::new();
        let a = conn(1, "ann");
        connect(&t, &a, read(E, 0));
        // The stream restarted elsewhere (its data was lost): told, then delivered.
        let arrival = publish(&t, "ann", "0000000f", 1);
        assert_eq!(arrival.queued, 1);
        assert_eq!(got(&a), ["reset@0/0000000f", "p1"]);

        let b = conn(2, "bob");
        connect(&t, &b, read(E, 0));
        // Offsets 1 and 2 never arrived here: a gap for the shell to fill from history.
        let arrival = publish(&t, "bob", E, 3);
        assert_eq!((arrival.queued, arrival.gap), (0, Some((0, 3))));
        assert!(got(&b).is_empty());
    }

    #[test]
    fn a_resync_to_another_epoch_tells_parked_connections() {
        let t = Topics::new();
        let a = conn(1, "ann");
        connect(&t, &a, read(E, 0));
        // The store lost its data: the catch-up finds the stream in a new epoch.
        let arrival = t.resync("#ann", "0000000f", 0, reset);
        assert!(arrival.overflowed.is_empty());
        assert_eq!(got(&a), ["reset@0/0000000f"]);
        assert_eq!(t.position("#ann"), Some(("0000000f".into(), 0)));
        assert_eq!(publish(&t, "ann", "0000000f", 1).queued, 1);
        assert_eq!(got(&a), ["reset@0/0000000f", "p1"]);
    }

    #[test]
    fn a_stream_that_is_not_empty_or_moved_while_joining_is_joined_as_before() {
        let t = Topics::new();
        // Not empty: a subscriber at its top.
        let a = conn(1, "ann");
        let j = connect(&t, &a, read(E, 4));
        assert_eq!(j.offset, 4);
        assert_eq!((t.len(), t.parked_len()), (1, 0));

        // A publication arrived while reading: joined, and it is delivered.
        let b = conn(2, "bob");
        let JoinStart::Joining(ticket) = t.begin_join("#bob", &b, 0).unwrap() else {
            panic!()
        };
        publish(&t, "bob", E, 1);
        let j = t.finish_or_park(ticket, read(E, 0), None, reset).unwrap();
        assert_eq!(j.offset, 0);
        assert_eq!((got(&b), t.parked_len()), (vec!["p1".to_owned()], 0));

        // Someone already subscribed: the next connection of that user subscribes too.
        let b2 = conn(3, "bob");
        connect(&t, &b2, read(E, 1));
        publish(&t, "bob", E, 2);
        assert_eq!(got(&b2), ["p2"]);

        // An epoch the parked record cannot hold: joined.
        let c = conn(4, "cy");
        connect(&t, &c, read("legacy-epoch", 0));
        assert_eq!(t.parked_len(), 0);
        assert!(t.is_held("#cy"));
    }

    #[test]
    fn a_closing_connection_is_never_parked_and_a_resume_from_zero_recovers() {
        let t = Topics::new();
        let a = conn(1, "ann");
        let JoinStart::Joining(ticket) = t.begin_join("#ann", &a, 0).unwrap() else {
            panic!()
        };
        a.mark_closing();
        assert_eq!(t.leave_all(&a), ["#ann"], "the joiner left");
        assert!(t.finish_or_park(ticket, read(E, 0), None, reset).is_none());
        assert_eq!((t.len(), t.parked_len()), (0, 0));

        let b = conn(2, "bob");
        let name = "#bob";
        let JoinStart::Joining(ticket) = t.begin_join(name, &b, 0).unwrap() else {
            panic!()
        };
        let j = t
            .finish_or_park(ticket, read(E, 0), Some((0, E)), reset)
            .unwrap();
        assert_eq!((j.offset, j.recovered), (0, Some(true)));
        let JoinStart::Joining(ticket) = t.begin_join(name, &conn(3, "bob"), 0).unwrap() else {
            panic!()
        };
        let j = t
            .finish_or_park(ticket, read(E, 0), Some((0, "0000000f")), reset)
            .unwrap();
        assert_eq!(j.recovered, Some(false), "another epoch");
    }
}
