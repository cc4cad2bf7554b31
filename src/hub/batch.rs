//! Many publications in one call (PublishBatch, PublishStream). Each follows every rule of a
//! unary Publish (validation, history, offsets, idempotency by id). Items of one topic go one
//! after another, in item order, so they take offsets in that order; once one fails
//! UNAVAILABLE, the later items of that topic in the same call are not published (a retry of
//! the call cannot then land out of order). Different topics are published concurrently: a
//! batch all at once, a stream as its items come ([`Chains`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Hub, PublishOutcome};
use crate::core::message::MessageInput;
use crate::core::CoreError;

/// One publication of a batch or a stream.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub topic: String,
    /// `(type, payload_json, id)`; `None` when the request left `message` unset.
    pub message: Option<(String, String, String)>,
}

/// What a batch or a stream remembers across its items: the topics whose publication failed
/// UNAVAILABLE (their later items are refused unpublished).
#[derive(Debug, Default)]
pub struct Stopped(HashSet<String>);

/// What a stream remembers across its items: per topic, its latest item's outcome while it
/// runs (`None`), then whether the topic is stopped. Entries of topics that finished well
/// are dropped once there are many; stopped ones stay for the stream's life.
#[derive(Default)]
pub struct Chains {
    last: HashMap<String, watch::Receiver<Option<bool>>>,
}

/// Past this many topics a stream forgets the finished ones.
const CHAINS_KEPT: usize = 4096;

impl Chains {
    fn prune(&mut self) {
        if self.last.len() > CHAINS_KEPT {
            self.last.retain(|_, r| *r.borrow() != Some(false));
        }
    }
}

impl Hub {
    /// Publishes `items`, answering one result per item, in item order.
    pub async fn publish_many(
        &self,
        items: &[BatchItem],
        stopped: &mut Stopped,
    ) -> Vec<Result<PublishOutcome, CoreError>> {
        let mut order: Vec<&str> = Vec::new();
        let mut by_topic: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            by_topic
                .entry(&item.topic)
                .or_insert_with(|| {
                    order.push(&item.topic);
                    Vec::new()
                })
                .push(i);
        }
        let runs = order.iter().map(|topic| {
            let down = stopped.0.contains(*topic);
            self.publish_in_order(items, &by_topic[topic], down)
        });
        let done = futures_util::future::join_all(runs).await;
        let mut out: Vec<Option<Result<PublishOutcome, CoreError>>> = vec![None; items.len()];
        for (topic, (down, results)) in order.iter().zip(done) {
            if down {
                stopped.0.insert((*topic).to_owned());
            }
            for (i, r) in results {
                out[i] = Some(r);
            }
        }
        // Every index belongs to exactly one topic's run, which answered it.
        out.into_iter()
            .map(|r| r.unwrap_or(Err(CoreError::Unavailable("not answered".into()))))
            .collect()
    }

    /// One topic's items, one after another; returns whether the topic is stopped now.
    async fn publish_in_order(
        &self,
        items: &[BatchItem],
        indices: &[usize],
        mut down: bool,
    ) -> (bool, Vec<(usize, Result<PublishOutcome, CoreError>)>) {
        let mut out = Vec::with_capacity(indices.len());
        for &i in indices {
            let (now_down, r) = self.publish_item(&items[i], down).await;
            down = now_down;
            out.push((i, r));
        }
        (down, out)
    }

    /// One item, unless its topic is `down` already; returns whether the topic is down now.
    async fn publish_item(
        &self,
        item: &BatchItem,
        down: bool,
    ) -> (bool, Result<PublishOutcome, CoreError>) {
        let r = match (&item.message, down) {
            (_, true) => Err(CoreError::Unavailable(
                "an earlier publication to this topic in the same call failed UNAVAILABLE; \
                 this one was not published, so that a retry keeps the order"
                    .into(),
            )),
            (None, false) => Err(CoreError::invalid("message", "is required")),
            (Some((kind, payload_json, id)), false) => {
                let input = MessageInput {
                    kind,
                    payload_json,
                    id,
                };
                self.publish(&item.topic, input).await
            }
        };
        let down = down || matches!(r, Err(CoreError::Unavailable(_) | CoreError::ShuttingDown));
        (down, r)
    }

    /// Starts one item of a stream: it publishes at once, unless an earlier item of its topic
    /// is still running, which it waits for (topic order); after an UNAVAILABLE of its topic
    /// it is not published. The future answers as a unary Publish of the item would.
    pub fn publish_chained(
        self: &Arc<Self>,
        chains: &mut Chains,
        item: BatchItem,
    ) -> impl Future<Output = Result<PublishOutcome, CoreError>> + Send + 'static {
        chains.prune();
        let before = chains.last.get(&item.topic).cloned();
        let (done, after) = watch::channel(None);
        chains.last.insert(item.topic.clone(), after);
        let hub = Arc::clone(self);
        async move {
            let down = match before {
                None => false,
                Some(mut b) => match b.wait_for(Option::is_some).await {
                    Ok(v) => (*v).unwrap_or(true),
                    // The earlier item was dropped unanswered: nothing is known, so not after it.
                    Err(_) => true,
                },
            };
            let (down, r) = hub.publish_item(&item, down).await;
            let _ = done.send(Some(down));
            r
        }
    }
}
