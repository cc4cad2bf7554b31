//! Deliveries and interest on Redis: a delivery is one request on the narrowest channel
//! (`rt:u:<user>`, `rt:r:<role>`, `rt:n:<node>`, `rt:c`), answered by each receiving node
//! with its count; interest is the channels this node subscribes to ([`super::interest`]).

use std::sync::atomic::Ordering;

use super::wire::{self, Header, Response};
use super::{not_found, BoxFuture, Broker, RedisCluster};
use crate::core::event::Message;
use crate::core::model::Who;
use crate::core::CoreError;

impl Broker for RedisCluster {
    fn deliver(&self, route: Who, message: Message) -> BoxFuture<'_, Result<u32, CoreError>> {
        Box::pin(async move {
            let channel = self.channel_of(&route)?;
            let from = self.node_id.clone();
            let by_connection = matches!(route, Who::Connection(_));
            let id = match &route {
                Who::Connection(id) => id.clone(),
                _ => String::new(),
            };
            let body = wire::encode_message(&message);
            let replies = self
                .ask(&channel, |rid| Header::Deliver { from, rid, route }, &body)
                .await?;
            let mut n = 0;
            let mut found = false;
            for r in replies {
                if let Response::Count(c) = r {
                    n += c;
                    found = true;
                }
            }
            if by_connection && !found {
                return Err(not_found(&id));
            }
            Ok(n)
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
