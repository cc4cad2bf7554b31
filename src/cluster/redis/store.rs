//! The history store on Redis: a Publish is one script run (idempotency, epoch, offset,
//! append, PUBLISH) in one round trip; reads go through the read script ([`super::history`]).

use redis::Value;

use super::counts;
use super::history::{as_string, as_u64};
use super::wire;
use super::{BoxFuture, HistoryStore, Key, RedisCluster};
use crate::clock::now_ms;
use crate::core::event::{Message, SharedEvent};
use crate::core::model::{
    name_hash, Delivered, HistoryPage, HistoryQuery, KeptPublication, StreamPosition,
};
use crate::core::topic_table::HistoryRead;
use crate::core::CoreError;

impl HistoryStore for RedisCluster {
    fn read(
        &self,
        topic: &str,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<HistoryRead<SharedEvent>, CoreError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.read_topic(&topic, since, true).await })
    }

    fn history(
        &self,
        topic: &str,
        q: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, CoreError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            // A count of 0 would read everything (XRANGE's COUNT 0): ask for the position alone.
            let (since, reverse) = match q.limit {
                0 => (None, false),
                _ => (q.since.or((!q.reverse).then_some(0)), q.reverse),
            };
            let count = q.limit.max(1);
            let (epoch, latest, entries) =
                self.read_raw(&topic, since, count, false, reverse).await?;
            let publications = entries
                .iter()
                .filter_map(|e| {
                    Some(KeptPublication::of(
                        e.offset,
                        &e.message_id,
                        e.message.as_ref()?,
                    ))
                })
                .collect();
            Ok(HistoryPage {
                publications,
                epoch,
                latest,
            })
        })
    }

    fn kept_topics(&self) -> BoxFuture<'_, Result<Vec<u64>, CoreError>> {
        Box::pin(async move {
            let oldest = now_ms() - self.settings.history_ttl_ms as i64;
            let mut pipe = redis::pipe();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(wire::TOPIC_INDEX)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore()
                .cmd("ZRANGE")
                .arg(wire::TOPIC_INDEX)
                .arg(0)
                .arg(-1);
            // Each instance indexes its own topics.
            let mut out = Vec::new();
            for i in 0..self.instances.len() {
                let (names,): (Vec<String>,) = self.pipeline(Key::Instance(i), &pipe).await?;
                out.extend(names.iter().map(|n| name_hash(n)));
            }
            Ok(out)
        })
    }
}

impl RedisCluster {
    /// A publication: one run of the publish script (idempotency, epoch, offset, append,
    /// PUBLISH, and the live nodes' counts of the topic's subscribers), one round trip.
    pub(super) async fn publish(
        &self,
        topic: &str,
        message: &Message,
        caller_id: bool,
    ) -> Result<Delivered, CoreError> {
        self.cluster_ready(Key::Topic(topic))?;
        let (stream, meta, idem_prefix) = wire::topic_keys(topic);
        let caller_id: &str = if caller_id { &message.id } else { "" };
        let idem = format!("{idem_prefix}{caller_id}");
        let (size, ttl_ms) = self.settings.kept(topic);
        let mut inv = self.publish_script.prepare_invoke();
        inv.key(&stream)
            .key(&meta)
            .key(&idem)
            .key(wire::TOPIC_INDEX)
            .key(counts::topic_counts_key(topic))
            .arg(wire::encode_message(message))
            // No reply wanted (request id 0): the script counts the receivers itself.
            .arg(wire::pub_header(&self.node_id, 0, topic))
            .arg(size)
            .arg(ttl_ms)
            .arg(self.meta_ttl_ms())
            .arg(crate::cluster::memory::new_epoch())
            .arg(caller_id)
            .arg(wire::topic_channel(topic))
            .arg(message.ts_ms)
            .arg(topic);
        let v: Value = self.invoke(Key::Topic(topic), &inv).await?;
        let Some((offset, epoch, n)) = published_reply(v) else {
            return Err(CoreError::Unavailable(
                "unexpected answer from the publish script".into(),
            ));
        };
        Ok(Delivered {
            // A duplicate (-1) delivered nothing.
            connections: u32::try_from(n).unwrap_or(0),
            position: Some(StreamPosition { offset, epoch }),
        })
    }
}

/// The publish script's answer: `{offset, epoch, connections}`, connections -1 for a
/// duplicate.
fn published_reply(v: Value) -> Option<(u64, String, i64)> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [o, e, n] = <[Value; 3]>::try_from(parts).ok()?;
    let Value::Int(n) = n else {
        return None;
    };
    Some((as_u64(&o)?, as_string(&e)?, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_answer_is_read_or_refused() {
        let v = Value::Array(vec![
            Value::Int(7),
            Value::BulkString(b"ab12".to_vec()),
            Value::Int(2),
        ]);
        assert_eq!(published_reply(v), Some((7, "ab12".into(), 2)));
        let dup = Value::Array(vec![
            Value::BulkString(b"3".to_vec()),
            Value::BulkString(b"e".to_vec()),
            Value::Int(-1),
        ]);
        assert_eq!(published_reply(dup), Some((3, "e".into(), -1)));
        assert_eq!(published_reply(Value::Int(1)), None);
        assert_eq!(published_reply(Value::Array(vec![Value::Int(1)])), None);
        let bad_count = Value::Array(vec![Value::Int(1), Value::Int(2), Value::Nil]);
        assert_eq!(published_reply(bad_count), None);
    }
}
