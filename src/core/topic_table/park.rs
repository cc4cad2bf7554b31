//! Parked user streams. A connection whose user stream is empty when it joins (its user was
//! never sent a direct message, or not for a day) is only marked parked, with the epoch it was
//! told, in its own state word ([`Conn::park`]): it costs no table state (about 330 bytes
//! with its map slot and name) and no record of its own, since the registry's user index
//! already finds every connection of a user. Most users of a push service are sent nothing
//! while connected, and every connection joins its user's stream. The stream's first
//! publication here adopts every parked connection of its user into the table before it is
//! delivered, so a parked connection misses nothing. Pure.
//!
//! No lock is shared between parking and closing: the state word does it. Parking (under the
//! stream state's lock, only while the state has no subscriber and no stream and the joiner
//! saw nothing arrive) refuses a connection already marked closing; adopting (with the state
//! that will hold them locked, then the registry's user index: that order) takes only open
//! ones; a closing connection's leave takes its own mark. So a connection that left is never
//! parked after, nor adopted after its leave looked for it.

use std::sync::Arc;

use super::*;
use crate::core::registry::Registry;
use crate::core::stream;

impl<O: Outbox> Topics<O>
where
    O::Item: Clone,
{
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
            if quiet && t.joining[idx].conn.park(epoch) {
                t.joining.swap_remove(idx);
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
    /// connections (found in `users`) become subscribers at offset 0 of the epoch they were
    /// told (one told another epoch, or behind where the stream already stands here, is told
    /// its position was lost by `reset`). Returns the connections whose queue overflowed.
    pub fn adopt(
        &self,
        topic: &str,
        users: &Registry<O>,
        reset: impl Fn(u64, &str) -> O::Item,
    ) -> Vec<Arc<Conn<O>>> {
        let mut overflowed = Vec::new();
        let Some(user) = stream::user_of(topic) else {
            return overflowed;
        };
        let mut any = false;
        users.each_of_user(user, |c| any |= c.parked().is_some());
        if !any {
            return overflowed;
        }
        let mut map = self.shard(topic).write();
        let state = Arc::clone(map.entry(topic.to_owned()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            Arc::default()
        }));
        let mut t = state.lock();
        drop(map);
        let mut taken = Vec::new();
        users.each_of_user(user, |c| {
            if let Some(epoch) = c.unpark(true) {
                taken.push((Arc::clone(c), epoch));
            }
        });
        for (conn, epoch) in taken {
            let told = stream::epoch_text(epoch);
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
                    push_overflow(&conn, &reset(s.last, &s.epoch), &mut overflowed);
                    s.last
                }
            };
            let seq = conn.info.seq;
            t.subscribers.insert(
                seq,
                Sub {
                    conn,
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

    /// The epoch a connection parked on user stream `topic` was told (it stands at offset 0).
    pub(super) fn parked_at(&self, topic: &str, users: &Registry<O>) -> Option<String> {
        let user = stream::user_of(topic)?;
        let mut epoch = None;
        users.each_of_user(user, |c| epoch = epoch.or(c.parked()));
        epoch.map(stream::epoch_text)
    }

    /// Every parked stream: (name, epoch, 0).
    pub(super) fn parked_positions(&self, users: &Registry<O>) -> Vec<(String, String, u64)> {
        let mut out = std::collections::BTreeMap::new();
        users.for_each(|c| {
            if let Some(epoch) = c.parked() {
                out.entry(stream::of_user(&c.info.user_id))
                    .or_insert_with(|| stream::epoch_text(epoch));
            }
        });
        out.into_iter().map(|(n, e)| (n, e, 0)).collect()
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

    /// A connection, registered in `r` as the shell does before joining its user stream.
    fn conn(r: &Registry<Rec>, seq: u64, user: &str) -> Arc<Conn<Rec>> {
        let c = Arc::new(Conn::new(
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
        ));
        r.insert(Arc::clone(&c));
        c
    }

    /// A closing connection's way out, as the shell takes it: out of the registry, then out
    /// of the table.
    fn close(t: &Topics<Rec>, r: &Registry<Rec>, c: &Conn<Rec>) -> Vec<String> {
        r.remove(c.info.seq);
        t.leave_all(c)
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

    fn publish(
        t: &Topics<Rec>,
        r: &Registry<Rec>,
        user: &str,
        epoch: &str,
        offset: u64,
    ) -> Arrival<Rec> {
        let name = stream::of_user(user);
        let overflowed = t.adopt(&name, r, reset);
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
        let (t, r) = (Topics::new(), Registry::new());
        let (a1, a2, b) = (conn(&r, 1, "ann"), conn(&r, 2, "ann"), conn(&r, 3, "bob"));
        for c in [&a1, &a2, &b] {
            let j = connect(&t, c, read(E, 0));
            assert_eq!((j.offset, j.epoch.as_str(), j.recovered), (0, E, None));
        }
        assert_eq!(
            (t.len(), r.parked_len()),
            (0, 3),
            "nothing held in the table"
        );
        assert!(
            a1.topic_set().is_empty(),
            "a user stream is not a topic of the set"
        );
        assert_eq!(t.position("#ann", &r), Some((E.to_owned(), 0)));
        assert_eq!(
            t.positions(&r),
            [("#ann".into(), E.into(), 0), ("#bob".into(), E.into(), 0)]
        );

        assert_eq!(publish(&t, &r, "ann", E, 1).queued, 2);
        assert_eq!((t.len(), r.parked_len()), (1, 1), "bob stays parked");
        assert_eq!(publish(&t, &r, "ann", E, 2).queued, 2);
        assert_eq!(got(&a1), ["p1", "p2"]);
        assert_eq!(got(&a2), ["p1", "p2"]);
        assert!(got(&b).is_empty());

        // Leaving: the stream is reported left whether held or parked.
        assert_eq!(close(&t, &r, &a1), ["#ann"]);
        assert_eq!(close(&t, &r, &b), ["#bob"]);
        assert_eq!(t.leave_all(&b), Vec::<String>::new(), "once");
        assert_eq!(r.parked_len(), 0);
        assert_eq!(close(&t, &r, &a2), ["#ann"]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_publication_in_another_epoch_or_after_a_gap_is_never_silent() {
        let (t, r) = (Topics::new(), Registry::new());
        let a = conn(&r, 1, "ann");
        connect(&t, &a, read(E, 0));
        // The stream restarted elsewhere (its data was lost): told, then delivered.
        let arrival = publish(&t, &r, "ann", "0000000f", 1);
        assert_eq!(arrival.queued, 1);
        assert_eq!(got(&a), ["reset@0/0000000f", "p1"]);

        let b = conn(&r, 2, "bob");
        connect(&t, &b, read(E, 0));
        // Offsets 1 and 2 never arrived here: a gap for the shell to fill from history.
        let arrival = publish(&t, &r, "bob", E, 3);
        assert_eq!((arrival.queued, arrival.gap), (0, Some((0, 3))));
        assert!(got(&b).is_empty());
    }

    #[test]
    fn a_resync_to_another_epoch_tells_parked_connections() {
        let (t, r) = (Topics::new(), Registry::new());
        let a = conn(&r, 1, "ann");
        connect(&t, &a, read(E, 0));
        // The store lost its data: the catch-up finds the stream in a new epoch.
        let arrival = t.resync("#ann", "0000000f", 0, &r, reset);
        assert!(arrival.overflowed.is_empty());
        assert_eq!(got(&a), ["reset@0/0000000f"]);
        assert_eq!(t.position("#ann", &r), Some(("0000000f".into(), 0)));
        assert_eq!(publish(&t, &r, "ann", "0000000f", 1).queued, 1);
        assert_eq!(got(&a), ["reset@0/0000000f", "p1"]);
    }

    #[test]
    fn a_stream_that_is_not_empty_or_moved_while_joining_is_joined_as_before() {
        let (t, r) = (Topics::new(), Registry::new());
        // Not empty: a subscriber at its top.
        let a = conn(&r, 1, "ann");
        let j = connect(&t, &a, read(E, 4));
        assert_eq!(j.offset, 4);
        assert_eq!((t.len(), r.parked_len()), (1, 0));

        // A publication arrived while reading: joined, and it is delivered.
        let b = conn(&r, 2, "bob");
        let JoinStart::Joining(ticket) = t.begin_join("#bob", &b, 0).unwrap() else {
            panic!()
        };
        publish(&t, &r, "bob", E, 1);
        let j = t.finish_or_park(ticket, read(E, 0), None, reset).unwrap();
        assert_eq!(j.offset, 0);
        assert_eq!((got(&b), r.parked_len()), (vec!["p1".to_owned()], 0));

        // Someone already subscribed: the next connection of that user subscribes too.
        let b2 = conn(&r, 3, "bob");
        connect(&t, &b2, read(E, 1));
        publish(&t, &r, "bob", E, 2);
        assert_eq!(got(&b2), ["p2"]);

        // An epoch the parked mark cannot hold: joined.
        let c = conn(&r, 4, "cy");
        connect(&t, &c, read("legacy-epoch", 0));
        assert_eq!(r.parked_len(), 0);
        assert!(t.is_held("#cy"));
    }

    #[test]
    fn a_closing_connection_is_never_parked_nor_adopted_and_a_resume_from_zero_recovers() {
        let (t, r) = (Topics::new(), Registry::new());
        let a = conn(&r, 1, "ann");
        let JoinStart::Joining(ticket) = t.begin_join("#ann", &a, 0).unwrap() else {
            panic!()
        };
        assert_eq!(close(&t, &r, &a), ["#ann"], "the joiner left");
        assert!(t.finish_or_park(ticket, read(E, 0), None, reset).is_none());
        assert_eq!((t.len(), a.parked()), (0, None));

        // Parked, then marked closing before its leave: no adoption takes it.
        let a2 = conn(&r, 5, "ann");
        connect(&t, &a2, read(E, 0));
        a2.mark_closing();
        assert_eq!(publish(&t, &r, "ann", E, 1).queued, 0);
        assert_eq!((t.len(), got(&a2).len()), (0, 0));
        assert_eq!(close(&t, &r, &a2), ["#ann"], "its leave takes its mark");
        assert_eq!(a2.parked(), None);

        let b = conn(&r, 2, "bob");
        let name = "#bob";
        let JoinStart::Joining(ticket) = t.begin_join(name, &b, 0).unwrap() else {
            panic!()
        };
        let j = t
            .finish_or_park(ticket, read(E, 0), Some((0, E)), reset)
            .unwrap();
        assert_eq!((j.offset, j.recovered), (0, Some(true)));
        let b2 = conn(&r, 3, "bob");
        let JoinStart::Joining(ticket) = t.begin_join(name, &b2, 0).unwrap() else {
            panic!()
        };
        let j = t
            .finish_or_park(ticket, read(E, 0), Some((0, "0000000f")), reset)
            .unwrap();
        assert_eq!(j.recovered, Some(false), "another epoch");
    }
}
