//! A topic's subscribers on this node, by connection sequence, in connection order: held
//! inline while there is one, a tree past that. Every connection joins its user's stream,
//! which has about one subscriber, and a `BTreeMap`'s first leaf costs about 370 bytes: inline,
//! one costs nothing beyond the topic's state. Pure.

use std::collections::{btree_map, BTreeMap};

/// The map: one entry inline, or a tree (empty: a tree without a node, no allocation).
pub(super) enum Subs<S> {
    One(u64, S),
    Many(BTreeMap<u64, S>),
}

impl<S> Default for Subs<S> {
    fn default() -> Self {
        Subs::Many(BTreeMap::new())
    }
}

impl<S> Subs<S> {
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Subs::Many(m) if m.is_empty())
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Subs::One(..) => 1,
            Subs::Many(m) => m.len(),
        }
    }

    /// Adds or replaces `seq`'s entry.
    pub(super) fn insert(&mut self, seq: u64, sub: S) {
        match self {
            Subs::Many(m) if m.is_empty() => *self = Subs::One(seq, sub),
            Subs::Many(m) => {
                m.insert(seq, sub);
            }
            Subs::One(s, held) if *s == seq => *held = sub,
            Subs::One(..) => {
                let Subs::One(s, held) = std::mem::take(self) else {
                    unreachable!("matched One just above")
                };
                *self = Subs::Many(BTreeMap::from([(s, held), (seq, sub)]));
            }
        }
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<S> {
        match self {
            Subs::One(s, _) if *s == seq => match std::mem::take(self) {
                Subs::One(_, held) => Some(held),
                Subs::Many(_) => None,
            },
            Subs::One(..) => None,
            Subs::Many(m) => m.remove(&seq),
        }
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut S> {
        match self {
            Subs::One(s, held) if *s == seq => Some(held),
            Subs::One(..) => None,
            Subs::Many(m) => m.get_mut(&seq),
        }
    }

    /// In connection order.
    pub(super) fn values(&self) -> Values<'_, S> {
        match self {
            Subs::One(_, held) => Values::One(Some(held)),
            Subs::Many(m) => Values::Many(m.values()),
        }
    }

    /// The entries from sequence `start` on, in connection order.
    pub(super) fn from(&self, start: u64) -> impl Iterator<Item = &S> {
        let (one, many) = match self {
            Subs::One(s, held) => ((*s >= start).then_some(held), None),
            Subs::Many(m) => (None, Some(m.range(start..).map(|(_, v)| v))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// In connection order.
    pub(super) fn values_mut(&mut self) -> ValuesMut<'_, S> {
        match self {
            Subs::One(_, held) => ValuesMut::One(Some(held)),
            Subs::Many(m) => ValuesMut::Many(m.values_mut()),
        }
    }
}

pub(super) enum Values<'a, S> {
    One(Option<&'a S>),
    Many(btree_map::Values<'a, u64, S>),
}

impl<'a, S> Iterator for Values<'a, S> {
    type Item = &'a S;
    fn next(&mut self) -> Option<&'a S> {
        match self {
            Values::One(s) => s.take(),
            Values::Many(i) => i.next(),
        }
    }
}

pub(super) enum ValuesMut<'a, S> {
    One(Option<&'a mut S>),
    Many(btree_map::ValuesMut<'a, u64, S>),
}

impl<'a, S> Iterator for ValuesMut<'a, S> {
    type Item = &'a mut S;
    fn next(&mut self) -> Option<&'a mut S> {
        match self {
            ValuesMut::One(s) => s.take(),
            ValuesMut::Many(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_inline_then_a_tree_in_order() {
        let mut s: Subs<&str> = Subs::default();
        assert!(s.is_empty());
        s.insert(5, "e");
        assert!(matches!(s, Subs::One(5, "e")));
        s.insert(5, "E");
        assert_eq!(s.values().copied().collect::<Vec<_>>(), ["E"]);
        s.insert(2, "b");
        s.insert(9, "i");
        assert_eq!(s.values().copied().collect::<Vec<_>>(), ["b", "E", "i"]);
        *s.get_mut(9).unwrap() = "I";
        for v in s.values_mut() {
            *v = if *v == "b" { "B" } else { v };
        }
        assert_eq!(s.values().copied().collect::<Vec<_>>(), ["B", "E", "I"]);
        assert_eq!((s.remove(2), s.remove(2)), (Some("B"), None));
        assert_eq!(s.remove(5), Some("E"));
        assert_eq!(s.remove(9), Some("I"));
        assert!(s.is_empty());
        s.insert(1, "a");
        assert!(s.get_mut(2).is_none());
        assert_eq!(s.remove(2), None);
        assert_eq!(s.remove(1), Some("a"));
        assert!(s.is_empty());
    }
}
