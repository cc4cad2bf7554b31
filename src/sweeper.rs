//! The heartbeat and expiry sweeper: one task per node, not a timer per connection. Each tick
//! it visits every connection (one shard read lock at a time), asks the pure
//! [`heartbeat::check`] what to do, requests pings, and closes connections whose heartbeat was
//! lost (4408) or whose token expired (4001) after the shard locks are released.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::core::heartbeat::{self, Action, Rules};
use crate::core::registry::Outbox;
use crate::heap_trim;
use crate::hub::Hub;
use crate::node::WsConn;

use crate::core::close::{
    HEARTBEAT_LOST as CLOSE_HEARTBEAT_LOST, REASON_TOKEN_EXPIRED,
    TOKEN_EXPIRED as CLOSE_TOKEN_EXPIRED,
};

pub fn rules(hub: &Hub) -> Rules {
    let l = &hub.config.limits;
    Rules {
        ping_interval_ms: l.ping_interval_ms as i64,
        pong_timeout_ms: l.pong_timeout_ms as i64,
        leeway_ms: hub.config.jwt.leeway_ms as i64,
    }
}

/// Runs until shutdown begins.
pub async fn run(hub: Arc<Hub>) {
    let rules = rules(&hub);
    let mut tick = tokio::time::interval(Duration::from_millis(heartbeat::tick_ms(rules)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = hub.shutdown_signal();
    let (mut peak, mut last_trim) = (0usize, now_ms());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = now_ms();
                sweep(&hub, rules, now);
                hub.local().refusals.flush(now);
                let len = hub.local().registry.len();
                peak = peak.max(len);
                if heap_trim::worth_trimming(peak, len, now - last_trim) {
                    heap_trim::trim();
                    (peak, last_trim) = (len, now);
                }
            }
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return,
        }
    }
}

/// Ends users' offline grace on time: a tick of a tenth of the grace (between 50 ms and 1 s),
/// until shutdown begins. In a cluster every node sweeps; each user's transition is handed
/// to one of them.
pub async fn run_users(hub: Arc<Hub>) {
    let every = (hub.config.users.offline_grace_ms / 10).clamp(50, 1000);
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = hub.shutdown_signal();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                hub.sweep_users().await;
            }
            _ = async { let _ = shutdown.wait_for(|down| *down).await; } => return,
        }
    }
}

/// One pass over every connection at time `now`. Returns (pings requested, connections closed).
pub fn sweep(hub: &Hub, rules: Rules, now: i64) -> (usize, usize) {
    let mut pinged = 0;
    let mut doomed: Vec<(Arc<WsConn>, u16, &str)> = Vec::new();
    hub.local().registry.for_each(
        |c| match heartbeat::check(now, c.heartbeat_state(), rules) {
            Action::Nothing => {}
            Action::SendPing => {
                c.mark_ping_sent(now);
                c.outbox.ping();
                pinged += 1;
            }
            Action::HeartbeatLost => {
                doomed.push((Arc::clone(c), CLOSE_HEARTBEAT_LOST, "heartbeat lost"))
            }
            Action::TokenExpired => {
                doomed.push((Arc::clone(c), CLOSE_TOKEN_EXPIRED, REASON_TOKEN_EXPIRED))
            }
        },
    );
    hub.store().sweep(now);
    let closed = doomed.len();
    for (conn, code, reason) in doomed {
        hub.local().close(&conn, code, reason);
    }
    (pinged, closed)
}
