//! Commands and questions about connections on Redis: each goes to the nodes that may hold
//! its target (one node for a connection id, the user's channel for a user, every node
//! otherwise), and their answers are merged.

use super::wire::{self, Request, Response};
use super::{counts, not_found, BoxFuture, Control, Key, RedisCluster};
use crate::clock::now_ms;
use crate::core::model::{
    merge_pages, Command, ConnSnapshot, Cursor, ListFilter, ListPage, PresenceCounts,
    PresenceEntry, StatsPart, Who,
};
use crate::core::CoreError;

impl Control for RedisCluster {
    fn command(&self, target: Who, command: Command) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(async move {
            let channel = self.channel_of(&target)?;
            let by_connection = match &target {
                Who::Connection(id) => Some(id.clone()),
                _ => None,
            };
            let replies = self
                .request(&channel, Request::Command { target, command })
                .await?;
            let mut n = 0;
            let mut found = false;
            for r in replies {
                match r {
                    Response::Count(c) => {
                        n += c;
                        found = true;
                    }
                    Response::Failed(why) => {
                        tracing::warn!(error = %why, "a node failed a command")
                    }
                    _ => {}
                }
            }
            match by_connection {
                Some(id) if !found => Err(not_found(&id)),
                _ => Ok(n),
            }
        })
    }

    fn get(&self, connection_id: &str) -> BoxFuture<'_, Result<ConnSnapshot, CoreError>> {
        let id = connection_id.to_owned();
        Box::pin(async move {
            let channel = self.channel_of(&Who::Connection(id.clone()))?;
            let replies = self
                .request(&channel, Request::Get { id: id.clone() })
                .await?;
            replies
                .into_iter()
                .find_map(|r| match r {
                    Response::Conn(c) => Some(*c),
                    _ => None,
                })
                .ok_or_else(|| not_found(&id))
        })
    }

    fn list(
        &self,
        filter: ListFilter,
        after: Option<Cursor>,
        size: usize,
    ) -> BoxFuture<'_, Result<ListPage, CoreError>> {
        Box::pin(async move {
            let channel = match (&filter.user, &filter.role, &filter.topic) {
                (Some(u), _, _) => wire::user_channel(u),
                (None, Some(r), _) => wire::role_channel(r),
                (None, None, Some(t)) => wire::topic_channel(t),
                _ => wire::CONTROL.to_owned(),
            };
            let replies = self
                .request(
                    &channel,
                    Request::List {
                        filter,
                        after,
                        size,
                    },
                )
                .await?;
            let pages = replies
                .into_iter()
                .filter_map(|r| match r {
                    Response::Page(p) => Some(p),
                    _ => None,
                })
                .collect();
            Ok(merge_pages(pages, size))
        })
    }

    fn presence_counts(&self, topic: &str) -> BoxFuture<'_, Result<PresenceCounts, CoreError>> {
        // From the counts the nodes keep in Redis: one script run, no node asked, nobody
        // listed (the live nodes' subscribers, and the length of the topic's user hash).
        let topic = topic.to_owned();
        Box::pin(async move {
            self.cluster_ready(Key::Topic(&topic))?;
            let mut inv = self.presence_script.prepare_invoke();
            inv.key(counts::topic_counts_key(&topic))
                .key(counts::topic_users_key(&topic));
            let (connections, users): (u64, u64) = self.invoke(Key::Topic(&topic), &inv).await?;
            Ok(PresenceCounts { connections, users })
        })
    }

    fn presence(&self, topic: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, CoreError>> {
        let channel = wire::topic_channel(topic);
        let topic = topic.to_owned();
        Box::pin(async move {
            let replies = self.request(&channel, Request::Presence { topic }).await?;
            let mut all: Vec<PresenceEntry> = replies
                .into_iter()
                .flat_map(|r| match r {
                    Response::Presence(p) => p,
                    _ => Vec::new(),
                })
                .collect();
            all.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
            Ok(all)
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<(Vec<StatsPart>, u32), CoreError>> {
        Box::pin(async move {
            let replies = self.request(wire::CONTROL, Request::Stats).await?;
            let parts = replies
                .into_iter()
                .filter_map(|r| match r {
                    Response::Stats(s) => Some(s),
                    _ => None,
                })
                .collect();
            let nodes = self
                .members
                .lock()
                .live(now_ms(), self.settings.node_ttl_ms);
            Ok((parts, nodes))
        })
    }

    fn watch(&self) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.request(wire::CONTROL, Request::Watch).await?;
            Ok(())
        })
    }

    fn unwatch(&self) {}

    fn end_session(&self, id: &str, until_ms: i64) -> BoxFuture<'_, Result<(), CoreError>> {
        // One key on the first instance, gone by itself when the session would have ended.
        let key = ended_session_key(id);
        Box::pin(async move {
            let left = (until_ms - now_ms()).max(1);
            let _: () = self
                .query(
                    Key::Global,
                    redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(left),
                )
                .await?;
            Ok(())
        })
    }

    fn session_ended(&self, id: &str) -> BoxFuture<'_, Result<bool, CoreError>> {
        let key = ended_session_key(id);
        Box::pin(async move {
            let n: u32 = self
                .query(Key::Global, redis::cmd("EXISTS").arg(&key))
                .await?;
            Ok(n > 0)
        })
    }
}

/// The key that marks an admin console session as signed out.
fn ended_session_key(id: &str) -> String {
    format!("rt:adm:out:{id}")
}
