//! Deliveries and interest on Redis: a delivery is one script run that publishes on the
//! narrowest channel (`rt:u:<user>`, `rt:r:<role>`, `rt:n:<node>`, `rt:c`, a topic's) and
//! answers from the counts the nodes keep ([`super::counts`]): no receiving node is waited
//! for. Interest is the channels this node subscribes to ([`super::interest`]) and the
//! counts it keeps, both changed by [`Broker::hold`] and [`Broker::release`].

use std::sync::atomic::Ordering;

use super::wire::{self, Header};
use super::{counts, not_found, users, BoxFuture, Broker, Key, RedisCluster};
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

    fn hold<'a>(&'a self, user: &'a str, keys: Vec<Who>) -> BoxFuture<'a, Result<(), CoreError>> {
        Box::pin(async move {
            for k in &keys {
                let i = match k {
                    Who::Connection(_) => 0,
                    k => match wire::channel(k) {
                        Some(ch) => self.instance_of(Key::Channel(&ch)),
                        None => 0,
                    },
                };
                if !self.subscribed(i) {
                    return Err(CoreError::Unavailable(format!(
                        "the pub/sub connection to Redis at {} is down",
                        self.instances[i].shown
                    )));
                }
            }
            let (sub, count) =
                tokio::join!(self.interest.hold(&keys), self.count_hold(user, &keys));
            match (sub, count) {
                (Ok(()), Ok(())) => Ok(()),
                (sub, count) => {
                    // On error nothing is held: what did succeed is taken back.
                    if sub.is_ok() {
                        self.interest.release(&keys);
                    }
                    self.count_release(user, &keys);
                    match sub {
                        Err(e) => Err(e),
                        Ok(()) => count,
                    }
                }
            }
        })
    }

    fn release(&self, user: &str, keys: Vec<Who>) {
        self.interest.release(&keys);
        self.count_release(user, &keys);
    }

    fn ready(&self) -> bool {
        // The first instance holds membership, roles and connection ids: without it nothing
        // works. Another instance down takes only its topics and users.
        self.cluster_ready(Key::Global).is_ok()
            && self.instances[0].cmd_ok.load(Ordering::Acquire)
            && !self.instances_mismatch.load(Ordering::Acquire)
    }
}

impl RedisCluster {
    /// A message with no stream: one run of the deliver script, which publishes it on the
    /// channel that reaches `to` and answers from the nodes' counts (no node is asked).
    async fn send(&self, to: Who, message: &Message) -> Result<u32, CoreError> {
        let channel = self.channel_of(&to)?;
        self.cluster_ready(Key::Channel(&channel))?;
        let msg = wire::encode(
            &Header::Deliver {
                from: self.node_id.clone(),
                rid: 0,
                route: to.clone(),
            },
            &wire::encode_message(message),
        );
        let mut inv = self.deliver_script.prepare_invoke();
        match &to {
            Who::Connection(id) => {
                let Some((node, _)) = crate::core::ids::parse_conn_id(id) else {
                    return Err(not_found(id));
                };
                inv.key(counts::conns_key(node))
                    .arg("c")
                    .arg(&channel)
                    .arg(msg)
                    .arg(id)
                    .arg(node);
            }
            Who::User(user) => {
                inv.key(users::counts_key(user))
                    .arg("h")
                    .arg(&channel)
                    .arg(msg);
            }
            Who::Role(role) => {
                inv.key(counts::role_counts_key(role))
                    .arg("h")
                    .arg(&channel)
                    .arg(msg);
            }
            Who::All => {
                inv.key(users::NODES).arg("a").arg(&channel).arg(msg);
            }
            Who::Topic(_) => return Err(CoreError::invalid("target", "a topic has a stream")),
        }
        let n: i64 = self.invoke(Key::Channel(&channel), &inv).await?;
        match to {
            Who::Connection(id) if n < 0 => Err(not_found(&id)),
            _ => Ok(u32::try_from(n).unwrap_or(0)),
        }
    }
}
