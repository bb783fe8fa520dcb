//! The message bus between nodes, as small as the cluster needs it: publish to a channel, hold a
//! set of subscriptions, hand what arrives to an inbox, and claim a node number for a while. Redis
//! implements it ([`super::redis`]); another bus (NATS) would implement the same trait and nothing
//! above it would change. Reconnecting, re-subscribing and re-announcing are done above, once for
//! every bus ([`super::link`]): a connection here lives until it fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why the bus cannot be used now; the text names the bus and what failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

/// A message bus: where to connect, and how.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Where it is, for logs (never with a password).
    fn describe(&self) -> &str;
    /// Opens a connection: one half publishes, the other receives.
    fn connect(&self) -> BoxFuture<'_, Result<BrokerConnection, BrokerError>>;
}

/// One connection to the bus, until it fails.
pub struct BrokerConnection {
    /// Publishes and claims.
    pub publisher: Box<dyn Publisher>,
    /// Holds the subscriptions and receives.
    pub subscriber: Box<dyn Subscriber>,
}

/// The publishing half of a connection.
pub trait Publisher: Send {
    /// Publishes each `(channel, payload)` in order, in as few round trips as the bus allows.
    fn publish<'a>(
        &'a mut self,
        batch: &'a [(Arc<str>, Bytes)],
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Claims `name` for `holder` for `lease` when no one else holds it, or renews it when
    /// `holder` does; false when another holder has it.
    fn claim<'a>(
        &'a mut self,
        name: &'a str,
        holder: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>>;
}

/// The receiving half of a connection.
pub trait Subscriber: Send {
    /// Subscribes to what `wanted` holds, follows its changes, and hands every message to
    /// `inbox`, until the connection fails (the error says why).
    fn run(
        self: Box<Self>,
        wanted: Arc<Wanted>,
        inbox: Arc<dyn Inbox>,
    ) -> BoxFuture<'static, BrokerError>;
}

/// Where a subscriber hands what arrives.
pub trait Inbox: Send + Sync {
    /// One message of `channel`.
    fn deliver(&self, channel: &[u8], payload: Bytes);
}

/// The channels a node wants to receive, which subscribers follow: the set is the truth, so a
/// subscriber that reconnects subscribes to it afresh and none of its changes can be lost.
#[derive(Debug, Default)]
pub struct Wanted {
    /// The channels.
    channels: Mutex<BTreeSet<Arc<str>>>,
    /// Wakes the subscriber when the set changes.
    changed: Notify,
}

impl Wanted {
    /// Adds (`true`) or removes a channel.
    pub fn set(&self, channel: Arc<str>, wanted: bool) {
        let changed = {
            let mut channels = self.channels.lock();
            if wanted {
                channels.insert(channel)
            } else {
                channels.remove(&channel)
            }
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// The channels now.
    pub fn snapshot(&self) -> BTreeSet<Arc<str>> {
        self.channels.lock().clone()
    }

    /// Waits for the next change (one made since the last wait counts).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
