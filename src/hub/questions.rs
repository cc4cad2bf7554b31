//! The cluster-wide questions: presence, history, a connection, a listing, stats, and the
//! lifecycle events a watcher follows. Each asks the engine and shapes its answer.

use super::*;
use crate::core::model::{NodeStats, PresenceCounts};
use crate::core::users::UserState;

/// The most user ids one GetUsers names.
pub const MAX_USERS: usize = 1000;

impl Hub {
    /// GetUsers: 1 to [`MAX_USERS`] ids, none empty; one answer per id, in request order.
    pub async fn users(&self, ids: Vec<String>) -> Result<Vec<UserState>, CoreError> {
        if ids.is_empty() || ids.len() > MAX_USERS {
            return Err(CoreError::invalid(
                "user_ids",
                format!("must name 1 to {MAX_USERS} users (got {})", ids.len()),
            ));
        }
        if let Some(i) = ids.iter().position(String::is_empty) {
            return Err(CoreError::invalid(format!("user_ids[{i}]"), "is empty"));
        }
        self.users.users(ids, now_ms()).await
    }

    /// Tells watchers of the users whose offline grace ended (the sweeper calls this often).
    /// Returns how many went offline here.
    pub async fn sweep_users(&self) -> usize {
        match self.users.offline_due(now_ms()).await {
            Ok(gone) => {
                for (user, at) in &gone {
                    self.local.emit_user(ConnEventKind::UserOffline, user, *at);
                }
                gone.len()
            }
            // The broker is away: the grace ends when it is back (a transition comes late).
            Err(_) => 0,
        }
    }

    /// The subscribers of a topic, cluster-wide, and the number of distinct users among them.
    pub async fn presence(&self, topic: &str) -> Result<(Vec<PresenceEntry>, usize), CoreError> {
        topic::validate_name("topic", topic)?;
        let subs = self.control.presence(topic).await?;
        let users: HashSet<&str> = subs.iter().map(|c| c.user_id.as_str()).collect();
        let n = users.len();
        Ok((subs, n))
    }

    /// The Presence RPC: a page of `topic`'s subscribers in ListConnections' order (a
    /// `page_size` of 0: up to [`MAX_PRESENCE_ALL`], as version 1 answered everyone; else at
    /// most [`MAX_PAGE_SIZE`]), and the counts of all of them, cluster-wide. With
    /// `counts_only`, the counts alone, from each node's counts: no one is listed.
    pub async fn presence_page(
        &self,
        topic: &str,
        page_size: u32,
        page_token: &str,
        counts_only: bool,
    ) -> Result<PresencePage, CoreError> {
        topic::validate_name("topic", topic)?;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(page::decode(page_token).ok_or_else(|| {
                CoreError::invalid("page_token", "is not a token from a previous Presence page")
            })?)
        };
        let PresenceCounts { connections, users } = self.control.presence_counts(topic).await?;
        let mut out = PresencePage {
            entries: Vec::new(),
            users,
            connections,
            next_page_token: String::new(),
        };
        if counts_only {
            return Ok(out);
        }
        let size = match page_size {
            0 => MAX_PRESENCE_ALL,
            n => n.min(MAX_PAGE_SIZE) as usize,
        };
        let filter = ListFilter {
            topic: Some(topic.to_owned()),
            ..Default::default()
        };
        let page = self.control.list(filter, after, size).await?;
        out.entries = page
            .items
            .into_iter()
            .map(|c| PresenceEntry {
                connection_id: c.id,
                user_id: c.user_id,
            })
            .collect();
        out.next_page_token = page
            .next
            .map(|(node, seq)| page::encode(&node, seq))
            .unwrap_or_default();
        Ok(out)
    }

    /// KeptPublication publications of a topic as `q` asks (its limit capped at [`MAX_HISTORY`]), with
    /// the epoch and the latest offset. A topic with no state answers nothing, an empty epoch
    /// and offset 0.
    pub async fn history(&self, topic: &str, q: HistoryQuery) -> Result<HistoryPage, CoreError> {
        topic::validate_name("topic", topic)?;
        let q = HistoryQuery {
            limit: q.limit.min(MAX_HISTORY),
            ..q
        };
        self.store.history(topic, q).await
    }

    /// A live connection by id, on whichever node holds it.
    pub async fn get(&self, connection_id: &str) -> Result<ConnSnapshot, CoreError> {
        self.control.get(connection_id).await
    }

    /// One page of connections matching `filter`, cluster-wide.
    pub async fn list(
        &self,
        filter: ListFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Listing, CoreError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(page::decode(page_token).ok_or_else(|| {
                CoreError::invalid(
                    "page_token",
                    "is not a token from a previous ListConnections page",
                )
            })?)
        };
        let p = self.control.list(filter, after, size).await?;
        Ok(Listing {
            connections: p.items,
            next_page_token: p
                .next
                .map(|(node, seq)| page::encode(&node, seq))
                .unwrap_or_default(),
            total: p.total,
        })
    }

    /// GetStats, cluster-wide.
    pub async fn stats(&self) -> Result<StatsSnapshot, CoreError> {
        Ok(self.stats_by_node().await?.0)
    }

    /// GetStats, cluster-wide, with each live node's own line (sorted by node id).
    pub async fn stats_by_node(&self) -> Result<(StatsSnapshot, Vec<NodeStats>), CoreError> {
        let (parts, nodes) = self.control.stats().await?;
        let mut lines: Vec<NodeStats> = parts
            .iter()
            .map(|p| NodeStats {
                node_id: p.node_id.clone(),
                connections: p.connections,
                users: p.users.len() as u64,
                messages_sent: p.messages_sent,
                messages_dropped: p.messages_dropped,
                started_at_ms: p.started_at_ms,
            })
            .collect();
        lines.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let kept = self.store.kept_topics().await?;
        let mut users = HashSet::new();
        let mut topics: HashSet<u64> = kept.into_iter().collect();
        let mut s = StatsSnapshot {
            connections: 0,
            users: 0,
            topics: 0,
            messages_sent: 0,
            messages_dropped: 0,
            nodes,
            node_id: self.local.id.clone(),
            started_at_ms: self.local.started_at_ms,
        };
        for p in parts {
            s.connections += p.connections;
            s.messages_sent += p.messages_sent;
            s.messages_dropped += p.messages_dropped;
            users.extend(p.users);
            topics.extend(p.topics);
        }
        s.users = users.len() as u64;
        s.topics = topics.len() as u64;
        Ok((s, lines))
    }

    /// Ends an admin console session on every node until `until_ms` (its own end).
    pub async fn end_admin_session(&self, id: &str, until_ms: i64) -> Result<(), CoreError> {
        self.control.end_session(id, until_ms).await
    }

    /// Whether an admin console session was signed out (on any node).
    pub async fn admin_session_ended(&self, id: &str) -> Result<bool, CoreError> {
        self.control.session_ended(id).await
    }

    /// Starts watching lifecycle events of every node.
    pub async fn watch(&self) -> Result<broadcast::Receiver<Arc<ConnEvent>>, CoreError> {
        let rx = self.local.subscribe_events();
        self.control.watch().await?;
        Ok(rx)
    }

    /// A watcher of this node went away.
    pub fn unwatch(&self) {
        self.control.unwatch();
    }
}
