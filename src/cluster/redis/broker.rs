//! Deliveries and interest on Redis: a delivery is one request on the narrowest channel
//! (`rt:u:<user>`, `rt:r:<role>`, `rt:n:<node>`, `rt:c`), answered by each receiving node
//! with its count; interest is the channels this node subscribes to ([`super::interest`]).

use std::sync::atomic::Ordering;

use super::wire::{self, Header, Response};
use super::{not_found, BoxFuture, Broker, RedisCluster};
use crate::core::event::Message;
use crate::core::model::{Delivered, Delivery, Who};
use crate::core::CoreError;

impl Broker for RedisCluster {
    fn deliver(&self, d: Delivery) -> BoxFuture<'_, Result<Delivered, CoreError>> {
        Box::pin(async move {
            match d.to {
                Who::Topic(topic) => self.publish(&topic, &d.message, d.caller_id).await,
                to => {
                    let connections = self.send(to, &d.message).await?;
                    Ok(Delivered {
                        connections,
                        position: None,
                    })
                }
            }
        })
    }

    fn hold(&self, keys: Vec<Who>) -> BoxFuture<'_, Result<(), CoreError>> {
        Box::pin(async move {
            if !self.pubsub_ready.load(Ordering::Acquire) {
                return Err(CoreError::Unavailable(
                    "the Redis pub/sub connection is down".into(),
                ));
            }
            self.interest.hold(&keys).await
        })
    }

    fn release(&self, keys: Vec<Who>) {
        self.interest.release(&keys);
    }

    fn ready(&self) -> bool {
        self.cluster_ready().is_ok() && self.cmd_ok.load(Ordering::Acquire)
    }
}

impl RedisCluster {
    /// A message with no stream: one request on the channel that reaches `to`, each receiving
    /// node answering with its count.
    async fn send(&self, to: Who, message: &Message) -> Result<u32, CoreError> {
        let channel = self.channel_of(&to)?;
        let from = self.node_id.clone();
        let connection = match &to {
            Who::Connection(id) => Some(id.clone()),
            _ => None,
        };
        let body = wire::encode_message(message);
        let replies = self
            .ask(
                &channel,
                |rid| Header::Deliver {
                    from,
                    rid,
                    route: to,
                },
                &body,
            )
            .await?;
        let mut n = 0;
        let mut found = false;
        for r in replies {
            if let Response::Count(c) = r {
                n += c;
                found = true;
            }
        }
        match connection {
            Some(id) if !found => Err(not_found(&id)),
            _ => Ok(n),
        }
    }
}
