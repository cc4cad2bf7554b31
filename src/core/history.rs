//! A topic's history, purely: offsets 1, 2, 3, ... with no gap, bounded by size and age,
//! idempotent by message id. Time is passed in; nothing here locks, allocates per recipient
//! or does I/O. The memory engine keeps one per topic; the Redis engine keeps the same in a
//! stream.

use std::collections::{HashMap, VecDeque};

/// One kept publication. `F` is the shared event (which carries the message), given again to
/// every subscriber that recovers it; `message_id` is set only for a caller-chosen id (only
/// those make a retry idempotent).
#[derive(Debug, Clone)]
pub struct HistoryEntry<F> {
    pub offset: u64,
    pub message_id: Box<str>,
    pub published_at_ms: i64,
    pub event: F,
}

/// A topic's history: the last `size` publications, none older than `ttl_ms`.
#[derive(Debug)]
pub struct History<F> {
    pub epoch: String,
    latest: u64,
    entries: VecDeque<HistoryEntry<F>>,
    ids: HashMap<Box<str>, u64>,
    size: usize,
    ttl_ms: i64,
    /// When the topic was last read or written (the store keeps an unused topic's position
    /// for a while after, so quiet topics keep their epoch; see the memory store's sweep).
    pub touched_ms: i64,
}

/// What recovering from a position gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Every publication after offset `after` (up to `latest`) is still kept: replay them.
    Replay { after: u64, latest: u64 },
    /// The epoch differs, or the history no longer reaches back that far.
    Lost,
}

impl<F: Clone> History<F> {
    pub fn new(epoch: String, size: usize, ttl_ms: u64) -> Self {
        History {
            epoch,
            latest: 0,
            entries: VecDeque::new(),
            ids: HashMap::new(),
            size,
            ttl_ms: i64::try_from(ttl_ms).unwrap_or(i64::MAX),
            touched_ms: 0,
        }
    }

    /// The offset of the newest publication (0 before the first).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// The offset a new publication will get.
    pub fn next_offset(&self) -> u64 {
        self.latest + 1
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The offset of a kept publication with this message id (an idempotent retry).
    pub fn find_id(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Appends the next publication (its `offset` must be [`History::next_offset`]).
    pub fn push(&mut self, p: HistoryEntry<F>, now_ms: i64) {
        debug_assert_eq!(p.offset, self.latest + 1);
        self.latest = p.offset;
        self.touched_ms = now_ms;
        if self.size == 0 {
            return;
        }
        if !p.message_id.is_empty() {
            self.ids.insert(p.message_id.clone(), p.offset);
        }
        // Room is made before the push, so a full history's deque stays at the capacity it
        // grew to (pushing first would double it for one entry).
        while self.entries.len() >= self.size {
            self.pop_front();
        }
        self.entries.push_back(p);
        self.evict(now_ms);
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            if self.ids.get(&old.message_id) == Some(&old.offset) {
                self.ids.remove(&old.message_id);
            }
        }
    }

    /// Drops publications older than the ttl.
    pub fn evict(&mut self, now_ms: i64) {
        while self
            .entries
            .front()
            .is_some_and(|p| now_ms - p.published_at_ms >= self.ttl_ms)
        {
            self.pop_front();
        }
    }

    /// What a client that last saw `offset` in `epoch` can recover.
    pub fn recover(&self, offset: u64, epoch: &str) -> Recovery {
        if epoch != self.epoch || offset > self.latest {
            return Recovery::Lost;
        }
        let replay = Recovery::Replay {
            after: offset,
            latest: self.latest,
        };
        if offset == self.latest {
            return replay;
        }
        match self.entries.front() {
            Some(first) if first.offset <= offset + 1 => replay,
            _ => Recovery::Lost,
        }
    }

    /// Kept publications with an offset after `since`, oldest first, at most `limit`.
    pub fn after(&self, since: u64, limit: usize) -> impl Iterator<Item = &HistoryEntry<F>> {
        let start = match self.entries.front() {
            Some(first) if since >= first.offset => (since - first.offset + 1) as usize,
            _ => 0,
        };
        self.entries.iter().skip(start).take(limit)
    }

    /// Kept publications with an offset below `until`, newest first, at most `limit`.
    pub fn before(&self, until: u64, limit: usize) -> impl Iterator<Item = &HistoryEntry<F>> {
        let end = match self.entries.front() {
            Some(first) if until > first.offset => (until - first.offset) as usize,
            _ => 0,
        };
        self.entries.iter().take(end).rev().take(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publ(offset: u64, id: &str, at: i64) -> HistoryEntry<u64> {
        HistoryEntry {
            offset,
            message_id: id.into(),
            published_at_ms: at,
            event: offset,
        }
    }

    #[test]
    fn reads_walk_forward_after_and_back_before() {
        let mut h: History<u64> = History::new("e".into(), 10, 60_000);
        for o in 1..=5 {
            h.push(publ(o, "", 0), 0);
        }
        let offsets = |it: &mut dyn Iterator<Item = &HistoryEntry<u64>>| -> Vec<u64> {
            it.map(|p| p.offset).collect()
        };
        assert_eq!(offsets(&mut h.after(2, 2)), [3, 4]);
        assert_eq!(offsets(&mut h.after(0, 10)), [1, 2, 3, 4, 5]);
        assert_eq!(offsets(&mut h.before(u64::MAX, 2)), [5, 4]);
        assert_eq!(offsets(&mut h.before(3, 10)), [2, 1]);
        assert_eq!(offsets(&mut h.before(1, 10)), Vec::<u64>::new());
        assert_eq!(offsets(&mut h.before(9, 0)), Vec::<u64>::new());
    }

    #[test]
    fn offsets_size_ttl_and_ids() {
        let mut h = History::new("e".into(), 3, 1000);
        assert_eq!((h.latest(), h.next_offset()), (0, 1));
        for o in 1..=5 {
            h.push(publ(o, &format!("m{o}"), o as i64 * 100), o as i64 * 100);
        }
        assert_eq!(h.latest(), 5);
        assert_eq!(
            h.after(0, 10).map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            h.after(3, 10).map(|p| p.offset).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(h.after(3, 1).map(|p| p.offset).collect::<Vec<_>>(), vec![4]);
        assert_eq!(h.find_id("m5"), Some(5));
        assert_eq!(h.find_id("m1"), None, "evicted by size");
        h.evict(1400);
        assert_eq!(
            h.after(0, 10).map(|p| p.offset).collect::<Vec<_>>(),
            vec![5],
            "3 and 4 aged out"
        );
        assert_eq!(h.find_id("m3"), None);
        h.evict(1500);
        assert!(h.is_empty());
        assert_eq!(h.latest(), 5, "offsets never go back");
    }

    #[test]
    fn recovery() {
        let mut h = History::new("e".into(), 3, 1_000_000);
        for o in 1..=5 {
            h.push(publ(o, "", 0), 0);
        }
        assert_eq!(
            h.recover(5, "e"),
            Recovery::Replay {
                after: 5,
                latest: 5
            },
            "nothing missed"
        );
        assert_eq!(
            h.recover(4, "e"),
            Recovery::Replay {
                after: 4,
                latest: 5
            }
        );
        assert_eq!(
            h.recover(2, "e"),
            Recovery::Replay {
                after: 2,
                latest: 5
            },
            "oldest kept is 3"
        );
        assert_eq!(h.recover(1, "e"), Recovery::Lost, "2 is gone");
        assert_eq!(h.recover(4, "other"), Recovery::Lost, "epoch changed");
        assert_eq!(h.recover(9, "e"), Recovery::Lost, "from the future");
        let empty: History<u64> = History::new("e".into(), 3, 1000);
        assert_eq!(
            empty.recover(0, "e"),
            Recovery::Replay {
                after: 0,
                latest: 0
            }
        );
    }
}
