//! Request and reply over pub/sub: a command or question is one PUBLISH on the
//! narrowest channel; Redis answers with how many nodes received it, and the caller waits for
//! exactly that many replies on its own node channel (its own share answered in process),
//! for at most [`REQUEST_DEADLINE`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::wire::{self, Header, Request, Response};
use super::{RedisCluster, REQUEST_DEADLINE};
use crate::core::CoreError;

/// One request's replies as they come in.
pub(super) struct Pending {
    expected: Option<usize>,
    got: Vec<Response>,
    done: Option<oneshot::Sender<Vec<Response>>>,
}

impl Pending {
    fn new(done: oneshot::Sender<Vec<Response>>) -> Self {
        Pending {
            expected: None,
            got: Vec::new(),
            done: Some(done),
        }
    }

    /// Records how many replies to wait for; true when they are all in already.
    fn expect(&mut self, n: usize) -> bool {
        self.expected = Some(n);
        self.got.len() >= n
    }

    /// Records a reply; true when it was the last one expected.
    fn add(&mut self, resp: Response) -> bool {
        self.got.push(resp);
        self.expected.is_some_and(|n| self.got.len() >= n)
    }

    /// Hands the replies to the waiting caller.
    fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(std::mem::take(&mut self.got));
        }
    }

    /// The replies so far (a request given up on).
    pub(super) fn into_partial(self) -> Vec<Response> {
        self.got
    }
}

impl RedisCluster {
    /// A pending request: its id, where its replies arrive, and the pub/sub generation it was
    /// made in (see [`RedisCluster::collect`]).
    pub(super) fn new_pending(&self) -> (u64, oneshot::Receiver<Vec<Response>>, u64) {
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(rid, Pending::new(tx));
        (rid, rx, self.hello_nonce.load(Ordering::Acquire))
    }

    /// Sets how many replies `rid` waits for; completes it when they are all in.
    pub(super) fn expect(&self, rid: u64, n: usize) {
        let mut p = self.pending.lock();
        if p.get_mut(&rid).is_some_and(|e| e.expect(n)) {
            if let Some(mut e) = p.remove(&rid) {
                e.finish();
            }
        }
    }

    pub(super) fn on_response(&self, rid: u64, resp: Response) {
        let mut p = self.pending.lock();
        if p.get_mut(&rid).is_some_and(|e| e.add(resp)) {
            if let Some(mut e) = p.remove(&rid) {
                e.finish();
            }
        }
    }

    /// Waits for the replies of `rid` until the deadline. A node that does not answer in time
    /// while Redis is fine (a hung node) is left out of the count; when this node lost Redis
    /// meanwhile, nobody can say what was delivered: UNAVAILABLE, never a false success.
    pub(super) async fn collect(
        &self,
        rid: u64,
        rx: oneshot::Receiver<Vec<Response>>,
        generation: u64,
    ) -> Result<Vec<Response>, CoreError> {
        match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => {
                let partial = self.pending.lock().remove(&rid).map(Pending::into_partial);
                self.local.metrics.cluster_incomplete.inc();
                // Lost Redis meanwhile, even if it is back already (a new generation).
                if !self.subscribed(0) || self.hello_nonce.load(Ordering::Acquire) != generation {
                    return Err(CoreError::Unavailable(
                        "Redis went away before every node had answered".into(),
                    ));
                }
                tracing::warn!(
                    rid,
                    "a cluster request timed out waiting for a node's reply"
                );
                Ok(partial.unwrap_or_default())
            }
        }
    }

    /// Publishes a request or delivery to `channel` and gathers one reply per receiving node.
    pub(super) async fn ask(
        &self,
        channel: &str,
        header: impl FnOnce(u64) -> Header,
        body: &[u8],
    ) -> Result<Vec<Response>, CoreError> {
        // Every delivery, command and question: only while each live node can hear it.
        self.cluster_ready(super::Key::Channel(channel))?;
        let (rid, rx, gen) = self.new_pending();
        let msg = wire::encode(&header(rid), body);
        let n = match self.publish_raw(channel, msg).await {
            Ok(n) => n,
            Err(e) => {
                self.pending.lock().remove(&rid);
                return Err(e);
            }
        };
        self.expect(rid, n);
        if n == 0 {
            return Ok(Vec::new());
        }
        self.collect(rid, rx, gen).await
    }

    pub(super) async fn request(
        &self,
        channel: &str,
        req: Request,
    ) -> Result<Vec<Response>, CoreError> {
        let from = self.node_id.clone();
        self.ask(channel, |rid| Header::Req { from, rid, req }, b"")
            .await
    }

    /// Sends a reply to `from` (in process when it is this node).
    pub(super) fn reply(self: &Arc<Self>, from: &str, rid: u64, resp: Response) {
        if from == self.node_id {
            self.on_response(rid, resp);
            return;
        }
        let msg = wire::encode(&Header::Resp { rid, resp }, b"");
        let channel = wire::node_channel(from);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.publish_raw(&channel, msg).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_completes_when_the_count_and_the_replies_are_both_in() {
        // Replies before the count (a fast node answers before PUBLISH returns).
        let (tx, mut rx) = oneshot::channel();
        let mut p = Pending::new(tx);
        assert!(!p.add(Response::Count(1)));
        assert!(!p.add(Response::NotFound));
        assert!(p.expect(2));
        p.finish();
        assert_eq!(
            rx.try_recv().unwrap(),
            [Response::Count(1), Response::NotFound]
        );
        // The count first.
        let (tx, mut rx) = oneshot::channel();
        let mut p = Pending::new(tx);
        assert!(!p.expect(2));
        assert!(!p.add(Response::Count(3)));
        assert!(p.add(Response::Count(4)));
        p.finish();
        assert_eq!(
            rx.try_recv().unwrap(),
            [Response::Count(3), Response::Count(4)]
        );
        // Nobody received it.
        let (tx, _rx) = oneshot::channel();
        assert!(Pending::new(tx).expect(0));
        // Given up on: what came so far.
        let (tx, _rx) = oneshot::channel();
        let mut p = Pending::new(tx);
        p.expect(3);
        p.add(Response::Ok);
        assert_eq!(p.into_partial(), [Response::Ok]);
    }
}
