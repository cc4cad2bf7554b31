//! The broker seam: how a delivery reaches every node that holds a recipient. The in-memory
//! broker (the default, a single node) hands it straight to this node; a cluster broker (Redis,
//! later) will publish it to the other nodes too, each of which ends in
//! [`LocalNode::deliver`]. The doors never see which one runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::ids::parse_conn_id;
use crate::core::registry::Target;
use crate::core::CoreError;
use crate::node::LocalNode;
use crate::ws::outbox::SharedFrame;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a delivery goes to, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    User(String),
    Role(String),
    /// One connection, by its id `<node_id>.<seq>`: the node is read from the id.
    Connection(String),
    All,
}

pub trait Broker: Send + Sync + 'static {
    /// Queues `frame` to every connection `route` names, on every node. Returns how many
    /// connections it was queued to; NOT_FOUND for a connection that is not live.
    fn deliver(&self, route: Route, frame: SharedFrame) -> BoxFuture<'_, Result<u32, CoreError>>;
}

/// The single-node broker: every connection is on this node.
pub struct MemoryBroker {
    local: Arc<LocalNode>,
}

impl MemoryBroker {
    pub fn new(local: Arc<LocalNode>) -> Self {
        MemoryBroker { local }
    }
}

impl Broker for MemoryBroker {
    fn deliver(&self, route: Route, frame: SharedFrame) -> BoxFuture<'_, Result<u32, CoreError>> {
        let result = match &route {
            Route::User(u) => Ok(self.local.deliver(Target::User(u), &frame)),
            Route::Role(r) => Ok(self.local.deliver(Target::Role(r), &frame)),
            Route::All => Ok(self.local.deliver(Target::All, &frame)),
            Route::Connection(id) => match parse_conn_id(id) {
                Some((node, seq))
                    if node == self.local.id && self.local.registry.get(seq).is_some() =>
                {
                    Ok(self.local.deliver(Target::Connection(seq), &frame))
                }
                _ => Err(CoreError::NotFound {
                    what: format!("connection {id:?}"),
                }),
            },
        };
        Box::pin(std::future::ready(result))
    }
}
