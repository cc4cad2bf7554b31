//! Who is online, purely (PROTOCOL.md section 7): a user is online from its first live
//! connection until its last one closed and none came back within the grace; GetUsers and the
//! USER_ONLINE / USER_OFFLINE events read the same state, so polling and events agree.
//!
//! [`UserTable`] is the single node's whole state (the Redis engine keeps the same fields in
//! Redis, changed by scripts); [`UserState::of`] turns either's raw fields into the answer.
//! Time is passed in as unix milliseconds.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// A user as GetUsers answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub user_id: String,
    /// Online: live connections, or within the grace after the last one closed.
    pub online: bool,
    /// Live connections, cluster-wide.
    pub connections: u32,
    /// When the current online period began (when online).
    pub online_since_ms: Option<i64>,
    /// When the last connection closed (when offline, and within `last_seen_ttl_ms`).
    pub last_seen_ms: Option<i64>,
}

impl UserState {
    /// The answer from the raw fields: the connection count, when the online period began,
    /// whether the user is in its grace, when it was last seen, and how long that is kept.
    pub fn of(
        user_id: &str,
        connections: u32,
        since: Option<i64>,
        in_grace: bool,
        seen: Option<i64>,
        now_ms: i64,
        seen_ttl_ms: u64,
    ) -> UserState {
        let online = connections > 0 || in_grace;
        let ttl = i64::try_from(seen_ttl_ms).unwrap_or(i64::MAX);
        UserState {
            user_id: user_id.to_owned(),
            online,
            connections,
            online_since_ms: since.filter(|_| online),
            last_seen_ms: seen.filter(|s| !online && now_ms.saturating_sub(*s) < ttl),
        }
    }
}

/// One user's state in a [`UserTable`].
#[derive(Debug, Clone, Default)]
struct Entry {
    connections: u32,
    since: i64,
    /// When the last connection closed, while the grace runs.
    closed: Option<i64>,
    /// When it went offline (the last connection's close).
    seen: Option<i64>,
    /// The epoch of the user's stream while it has no message (the memory engine's; 0:
    /// none). Kept with the user, in what was padding, so that a user who is never sent
    /// anything costs no more with user streams on than off.
    stream_epoch: u32,
}

/// Every user's online state on one node: connection counts, the online period, the grace
/// and `last_seen`. Bounded: an offline user is forgotten `last_seen_ttl_ms` after it left.
#[derive(Debug)]
pub struct UserTable {
    users: HashMap<String, Entry>,
    /// Users in their grace, by when it ends.
    grace: BTreeSet<(i64, String)>,
    /// Users gone offline, in the order they went (so the oldest are forgotten first).
    gone: VecDeque<(i64, String)>,
    grace_ms: i64,
    seen_ttl_ms: u64,
    /// Stream epochs of users forgotten since the last [`UserTable::take_forgotten_epochs`]:
    /// (user, epoch, when last seen).
    forgotten_epochs: Vec<(String, u32, i64)>,
}

impl UserTable {
    pub fn new(grace_ms: u64, seen_ttl_ms: u64) -> Self {
        UserTable {
            users: HashMap::new(),
            grace: BTreeSet::new(),
            gone: VecDeque::new(),
            grace_ms: i64::try_from(grace_ms).unwrap_or(i64::MAX),
            seen_ttl_ms,
            forgotten_epochs: Vec::new(),
        }
    }

    /// A connection of `user` opened. True when the user came online (not when a connection
    /// came back within the grace: the online period goes on).
    pub fn opened(&mut self, user: &str, now_ms: i64) -> bool {
        let e = self.users.entry(user.to_owned()).or_default();
        e.connections += 1;
        if e.connections > 1 {
            return false;
        }
        if let Some(closed) = e.closed.take() {
            self.grace
                .remove(&(closed.saturating_add(self.grace_ms), user.to_owned()));
            return false;
        }
        e.since = now_ms;
        e.seen = None;
        true
    }

    /// A connection of `user` closed; with it the last, the grace begins.
    pub fn closed(&mut self, user: &str, now_ms: i64) {
        let Some(e) = self.users.get_mut(user) else {
            return;
        };
        e.connections = e.connections.saturating_sub(1);
        if e.connections == 0 && e.closed.is_none() {
            e.closed = Some(now_ms);
            self.grace
                .insert((now_ms.saturating_add(self.grace_ms), user.to_owned()));
        }
    }

    /// The users whose grace ended by `now_ms`: they went offline, at the time their last
    /// connection closed. Also forgets users offline longer than `last_seen_ttl_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while let Some((end, _)) = self.grace.first() {
            if *end > now_ms {
                break;
            }
            let Some((_, user)) = self.grace.pop_first() else {
                break;
            };
            if let Some(e) = self.users.get_mut(&user) {
                if let Some(closed) = e.closed.take() {
                    e.seen = Some(closed);
                    self.gone.push_back((closed, user.clone()));
                    out.push((user, closed));
                }
            }
        }
        let ttl = i64::try_from(self.seen_ttl_ms).unwrap_or(i64::MAX);
        while let Some((at, _)) = self.gone.front() {
            if now_ms.saturating_sub(*at) < ttl {
                break;
            }
            let Some((at, user)) = self.gone.pop_front() else {
                break;
            };
            // Only if it is still that same absence (it may have come back, or left again).
            let stale = self
                .users
                .get(&user)
                .is_some_and(|e| e.connections == 0 && e.closed.is_none() && e.seen == Some(at));
            if stale {
                if let Some(e) = self.users.remove(&user).filter(|e| e.stream_epoch != 0) {
                    self.forgotten_epochs.push((user, e.stream_epoch, at));
                }
            }
        }
        out
    }

    /// `user` as GetUsers answers it.
    pub fn state(&self, user: &str, now_ms: i64) -> UserState {
        match self.users.get(user) {
            None => UserState {
                user_id: user.to_owned(),
                ..Default::default()
            },
            Some(e) => UserState::of(
                user,
                e.connections,
                Some(e.since),
                e.closed.is_some(),
                e.seen,
                now_ms,
                self.seen_ttl_ms,
            ),
        }
    }

    /// The epoch kept for `user`'s stream without messages, if any.
    pub fn stream_epoch(&self, user: &str) -> Option<u32> {
        self.users
            .get(user)
            .map(|e| e.stream_epoch)
            .filter(|e| *e != 0)
    }

    /// Keeps `epoch` (not 0) for `user`'s stream without messages; false when the user is not
    /// known here (the caller keeps it elsewhere).
    pub fn set_stream_epoch(&mut self, user: &str, epoch: u32) -> bool {
        match self.users.get_mut(user) {
            Some(e) if epoch != 0 => {
                e.stream_epoch = epoch;
                true
            }
            _ => false,
        }
    }

    /// Takes the epoch kept for `user`'s stream (its first message takes it over).
    pub fn take_stream_epoch(&mut self, user: &str) -> Option<u32> {
        let e = self.users.get_mut(user)?;
        Some(std::mem::take(&mut e.stream_epoch)).filter(|e| *e != 0)
    }

    /// The stream epochs of users forgotten by [`UserTable::due`] since the last call:
    /// (user, epoch, when last seen), for the caller to keep as long as a position lives.
    pub fn take_forgotten_epochs(&mut self) -> Vec<(String, u32, i64)> {
        std::mem::take(&mut self.forgotten_epochs)
    }

    /// Users known (online, in grace, or remembered as last seen).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_from_the_first_connection_to_the_grace_after_the_last() {
        let mut t = UserTable::new(5_000, 60_000);
        assert!(t.opened("a", 1_000), "first connection: online");
        assert!(!t.opened("a", 1_100), "second: no transition");
        t.closed("a", 2_000);
        t.closed("a", 3_000);
        let s = t.state("a", 3_500);
        assert_eq!(
            (s.online, s.connections, s.online_since_ms, s.last_seen_ms),
            (true, 0, Some(1_000), None),
            "in the grace: still online"
        );
        assert!(t.due(7_999).is_empty());
        assert_eq!(t.due(8_000), vec![("a".to_owned(), 3_000)]);
        assert!(t.due(9_000).is_empty(), "reported once");
        let s = t.state("a", 9_000);
        assert_eq!(
            (s.online, s.online_since_ms, s.last_seen_ms),
            (false, None, Some(3_000))
        );
    }

    #[test]
    fn a_reconnect_within_the_grace_is_neither_offline_nor_online() {
        let mut t = UserTable::new(5_000, 60_000);
        assert!(t.opened("a", 1_000));
        t.closed("a", 2_000);
        assert!(!t.opened("a", 6_000), "back within the grace");
        assert!(t.due(100_000).is_empty());
        assert_eq!(t.state("a", 100_000).online_since_ms, Some(1_000));
        t.closed("a", 200_000);
        assert_eq!(t.due(205_000), vec![("a".to_owned(), 200_000)]);
        assert!(t.opened("a", 300_000), "after offline: online again");
        assert_eq!(t.state("a", 300_000).last_seen_ms, None);
    }

    #[test]
    fn last_seen_is_forgotten_after_its_ttl_and_unknown_users_are_offline() {
        let mut t = UserTable::new(0, 10_000);
        t.opened("a", 0);
        t.closed("a", 1_000);
        assert_eq!(t.due(1_000).len(), 1);
        assert_eq!(t.state("a", 10_999).last_seen_ms, Some(1_000));
        assert_eq!(t.state("a", 11_000).last_seen_ms, None);
        t.due(11_000);
        assert!(t.is_empty(), "forgotten");
        assert_eq!(
            t.state("nobody", 0),
            UserState {
                user_id: "nobody".into(),
                ..Default::default()
            }
        );
        // A close without an open (a count already reset) changes nothing.
        t.closed("ghost", 5);
        assert!(t.is_empty());
    }

    #[test]
    fn a_stream_epoch_lives_with_its_user_and_is_handed_back_when_the_user_is_forgotten() {
        let mut t = UserTable::new(0, 10_000);
        assert!(!t.set_stream_epoch("a", 7), "unknown: kept elsewhere");
        t.opened("a", 0);
        assert!(!t.set_stream_epoch("a", 0), "0 is no epoch");
        assert!(t.set_stream_epoch("a", 7));
        assert_eq!(t.stream_epoch("a"), Some(7));
        assert_eq!(t.take_stream_epoch("a"), Some(7));
        assert_eq!(
            (t.stream_epoch("a"), t.take_stream_epoch("a")),
            (None, None)
        );

        assert!(t.set_stream_epoch("a", 9));
        t.closed("a", 1_000);
        t.due(1_000);
        assert_eq!(t.stream_epoch("a"), Some(9), "kept while last seen is");
        assert!(t.take_forgotten_epochs().is_empty());
        t.due(11_000);
        assert!(t.is_empty());
        assert_eq!(t.take_forgotten_epochs(), [("a".to_owned(), 9, 1_000)]);
        assert!(t.take_forgotten_epochs().is_empty(), "once");
    }
}
