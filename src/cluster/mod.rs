//! Several nodes, one application: `publish`, `broadcast`, `send(id)`, `disconnect(id)` and
//! presence across Switchboard processes through a message broker (`serve --broker redis://...`).
//!
//! The connection registry ([`crate::net::connections`]) delivers locally first and hands the rest
//! to [`Cluster`], its [`RemoteNodes`]: each publish, broadcast or send is encoded once
//! ([`envelope`]) and queued for the broker, never awaited. What other nodes publish arrives
//! through the broker's subscriber and is delivered here with the registry's `*_here` methods; a
//! node drops its own messages coming back.
//!
//! Channels (all under `--broker-prefix`, default `switchboard`):
//! - `{prefix}:topic:{topic}`: publishes; a node subscribes while one of its connections (or
//!   STOMP sessions) holds the topic.
//! - `{prefix}:endpoint:{endpoint}`: broadcasts; subscribed while the node has a connection of
//!   the endpoint.
//! - `{prefix}:node:{n}`: sends, closes and answers for node `n`.
//! - `{prefix}:nodes`: hello, heartbeat, bye and presence queries ([`members`]).
//!
//! Files: [`broker`] (the bus, as a trait), [`redis`] (Redis), [`envelope`] (the bytes),
//! [`members`] (who is alive), [`presence`] (queries across nodes), `link` (connecting,
//! reconnecting, publishing).

pub mod broker;
pub mod envelope;
mod link;
pub mod members;
pub mod presence;
pub mod redis;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;

pub use broker::{Broker, BrokerError};
pub use redis::RedisBroker;

use broker::{Inbox, Wanted};
use envelope::Body;
use members::{Control, Heard, Members};
use presence::Queries;

use crate::event::ConnectionId;
use crate::net::close::checked_close;
use crate::net::connections::{ConnectionRegistry, SendError};
use crate::net::remote::{node_of, Interest, NodeId, NodeInfo, Presence, RemoteNodes};
use crate::stats::Stats;

/// How many envelopes may wait for the broker; beyond that they are dropped and counted (delivery
/// across nodes is at most once, and a burst must not grow memory without bound).
const OUTGOING_QUEUE: usize = 65_536;

/// How long a node waits for the broker at start to claim its number.
const FIRST_CONNECT: Duration = Duration::from_secs(5);

/// How long a node's claim on its number lasts unless renewed (each heartbeat renews it).
const NODE_LEASE: Duration = Duration::from_secs(10);

/// The channel names of one application (one prefix).
#[derive(Debug)]
struct Channels {
    /// Membership and presence queries.
    control: Arc<str>,
    /// `{prefix}:topic:`.
    topic: String,
    /// `{prefix}:endpoint:`.
    endpoint: String,
    /// `{prefix}:node:`.
    node: String,
    /// `{prefix}:node-id:`, the keys by which nodes claim their numbers.
    claim: String,
}

impl Channels {
    fn new(prefix: &str) -> Self {
        Self {
            control: format!("{prefix}:nodes").into(),
            topic: format!("{prefix}:topic:"),
            endpoint: format!("{prefix}:endpoint:"),
            node: format!("{prefix}:node:"),
            claim: format!("{prefix}:node-id:"),
        }
    }

    fn of_topic(&self, topic: &str) -> Arc<str> {
        format!("{}{topic}", self.topic).into()
    }

    fn of_endpoint(&self, endpoint: &str) -> Arc<str> {
        format!("{}{endpoint}", self.endpoint).into()
    }

    fn of_node(&self, node: NodeId) -> Arc<str> {
        format!("{}{node}", self.node).into()
    }
}

/// This node among the others: the registry's [`RemoteNodes`] and the broker's [`Inbox`].
#[derive(Debug)]
pub struct Cluster {
    /// Itself, for futures that outlive a borrow.
    this: Weak<Cluster>,
    /// This node's number.
    node: NodeId,
    /// This run of the node, random: tells a restarted node from the run before it.
    instance: String,
    /// The channel names.
    channels: Channels,
    /// This node's own channel.
    own_channel: Arc<str>,
    /// Where local connections are found and messages from other nodes delivered.
    registry: Weak<ConnectionRegistry>,
    /// Counters for `/metrics` (`stats.broker`).
    stats: Arc<Stats>,
    /// Envelopes for the broker: `(channel, envelope)`.
    outgoing: mpsc::Sender<(Arc<str>, Bytes)>,
    /// The channels this node subscribes to.
    wanted: Arc<Wanted>,
    /// The other live nodes.
    members: Mutex<Members>,
    /// Presence queries waiting for answers.
    queries: Queries,
    /// Whether the broker is reachable now.
    up: AtomicBool,
    /// Told when the node stops, so the link says bye.
    leaving: Notify,
    /// Told by the link once bye is said (or could not be).
    left: Notify,
    /// Whether an unreadable envelope was reported already (once per run).
    reported_unreadable: AtomicBool,
}

/// A random number, from the standard library's randomly keyed hasher, the time and the pid.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A candidate node number (never 0, the number of a node without a broker).
fn candidate_node() -> NodeId {
    (random() % u64::from(NodeId::MAX)) as NodeId + 1
}

impl Cluster {
    /// Joins the nodes sharing `broker` under `prefix`: claims a node number (waiting up to
    /// [`FIRST_CONNECT`] for the broker), makes the registry's ids carry it, links the registry
    /// to the other nodes and starts the link, which keeps the broker connected from then on.
    /// Called before the first connection is accepted.
    pub async fn join(
        broker: Arc<dyn Broker>,
        prefix: &str,
        registry: &Arc<ConnectionRegistry>,
        stats: Arc<Stats>,
    ) -> Arc<Cluster> {
        let channels = Channels::new(prefix);
        let instance = format!("{:016x}", random());
        let first = tokio::time::timeout(FIRST_CONNECT, broker.connect()).await;
        let (node, first) = match first {
            Ok(Ok(mut connection)) => {
                match claim_node(&mut *connection.publisher, &channels, &instance).await {
                    Ok(node) => (node, Some(connection)),
                    Err(error) => {
                        let node = candidate_node();
                        tracing::warn!(
                            "broker {}: cannot claim a node number ({error}); this node is {node}, \
                             chosen at random (unique among the nodes only by chance)",
                            broker.describe()
                        );
                        (node, None)
                    }
                }
            }
            Ok(Err(error)) => {
                let node = candidate_node();
                tracing::warn!(
                    "{error}; this node is {node}, chosen at random (unique among the nodes only by \
                     chance); it serves its own connections and joins the others when the broker \
                     answers"
                );
                (node, None)
            }
            Err(_) => {
                let node = candidate_node();
                tracing::warn!(
                    "broker {}: no answer within {} s; this node is {node}, chosen at random; it \
                     serves its own connections and joins the others when the broker answers",
                    broker.describe(),
                    FIRST_CONNECT.as_secs()
                );
                (node, None)
            }
        };
        registry.set_node(node);
        let (outgoing, outgoing_queue) = mpsc::channel(OUTGOING_QUEUE);
        let own_channel = channels.of_node(node);
        let wanted = Arc::new(Wanted::default());
        wanted.set(channels.control.clone(), true);
        wanted.set(own_channel.clone(), true);
        stats.broker.configured.store(true, Ordering::Relaxed);
        stats.broker.nodes.store(1, Ordering::Relaxed);
        let cluster = Arc::new_cyclic(|this| Cluster {
            this: this.clone(),
            node,
            instance,
            channels,
            own_channel,
            registry: Arc::downgrade(registry),
            stats,
            outgoing,
            wanted,
            members: Mutex::default(),
            queries: Queries::default(),
            up: AtomicBool::new(false),
            leaving: Notify::new(),
            left: Notify::new(),
            reported_unreadable: AtomicBool::new(false),
        });
        // What the registry holds already (nothing, unless handlers subscribed at start).
        let (topics, endpoints) = registry.interests();
        for topic in &topics {
            cluster.interest(Interest::Topic(topic), true);
        }
        for endpoint in &endpoints {
            cluster.interest(Interest::Endpoint(endpoint), true);
        }
        registry.set_remote(cluster.clone());
        tokio::spawn(link::run(cluster.clone(), broker, outgoing_queue, first));
        cluster
    }

    /// This node's number.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Says bye to the other nodes (server shutdown), waiting at most `limit`.
    pub async fn leave(&self, limit: Duration) {
        self.leaving.notify_one();
        let _ = tokio::time::timeout(limit, self.left.notified()).await;
    }

    /// This node as the others see it.
    fn this_node(&self) -> NodeInfo {
        match self.registry.upgrade() {
            Some(registry) => registry.this_node(),
            None => NodeInfo {
                id: self.node,
                name: String::new(),
                address: String::new(),
                connections: 0,
                this: true,
            },
        }
    }

    /// A control envelope.
    fn control(&self, control: &Control) -> Bytes {
        let json = serde_json::to_vec(control).unwrap_or_default();
        envelope::control(self.node, &json)
    }

    /// This node's hello (`answer`: ask the receivers for theirs).
    fn hello(&self, answer: bool) -> Bytes {
        self.control(&Control::Hello {
            node: self.this_node(),
            instance: self.instance.clone(),
            answer,
        })
    }

    /// This node's heartbeat.
    fn heartbeat(&self) -> Bytes {
        self.control(&Control::Heartbeat {
            node: self.this_node(),
            instance: self.instance.clone(),
        })
    }

    /// This node's bye.
    fn bye(&self) -> Bytes {
        self.control(&Control::Bye {
            instance: self.instance.clone(),
        })
    }

    /// Queues an envelope for the broker; drops it (counted) when the broker is down or the
    /// queue is full.
    fn queue(&self, channel: Arc<str>, envelope: Bytes) -> bool {
        if !self.up.load(Ordering::Relaxed) {
            self.stats.broker.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.outgoing.try_send((channel, envelope)) {
            Ok(()) => true,
            Err(_) => {
                self.stats.broker.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues an envelope for the node of connection `id`: `NotOpen` when no live node has that
    /// number, `Unreachable` when the broker is down (or its queue full).
    fn to_node_of(
        &self,
        id: ConnectionId,
        envelope: impl FnOnce() -> Option<Bytes>,
    ) -> Result<(), SendError> {
        let node = node_of(id);
        let up = self.up.load(Ordering::Relaxed);
        if !self.members.lock().contains(node) {
            return Err(match up {
                true => SendError::NotOpen(id),
                false => SendError::Unreachable(id, node),
            });
        }
        let Some(envelope) = envelope() else {
            return Ok(()); // a control frame: nothing crosses nodes
        };
        match self.queue(self.channels.of_node(node), envelope) {
            true => Ok(()),
            false => Err(SendError::Unreachable(id, node)),
        }
    }

    /// Whether another node is live (if none is, nothing needs publishing).
    fn has_members(&self) -> bool {
        // The count every change of membership keeps (`count_nodes`): no lock per publish.
        self.stats.broker.nodes.load(Ordering::Relaxed) > 1
    }

    /// The link is up: counts it, and gives every known node time to speak up again.
    fn went_up(&self, reconnected: bool) {
        self.members.lock().grace(Instant::now());
        self.up.store(true, Ordering::Relaxed);
        self.stats.broker.up.store(true, Ordering::Relaxed);
        if reconnected {
            self.stats.broker.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The link is down.
    fn went_down(&self) {
        self.up.store(false, Ordering::Relaxed);
        self.stats.broker.up.store(false, Ordering::Relaxed);
    }

    /// Forgets the nodes that stopped sending heartbeats.
    fn sweep(&self) {
        let gone = self.members.lock().sweep(Instant::now());
        for node in &gone {
            tracing::info!(
                "node {} ({}) is gone: no heartbeat for {} s; its connections leave presence",
                node.id,
                node.name,
                members::FORGET_AFTER.as_secs()
            );
            self.queries.stop_waiting_for(node.id);
        }
        self.count_nodes();
    }

    fn count_nodes(&self) {
        let nodes = self.members.lock().len() as u64 + 1;
        self.stats.broker.nodes.store(nodes, Ordering::Relaxed);
    }

    /// Handles membership and presence traffic from node `origin`.
    fn on_control(&self, origin: NodeId, json: &[u8]) {
        let control: Control = match serde_json::from_slice(json) {
            Ok(control) => control,
            Err(error) => return self.unreadable(&format!("control message: {error}")),
        };
        match control {
            Control::Hello {
                node,
                instance,
                answer,
            } => {
                if self.conflicts(origin, &instance) {
                    return;
                }
                let id = node.id;
                self.joined(node, &instance);
                if answer {
                    self.queue(self.channels.of_node(id), self.hello(false));
                }
            }
            Control::Heartbeat { node, instance } => {
                if !self.conflicts(origin, &instance) {
                    self.joined(node, &instance);
                }
            }
            Control::Bye { instance } => {
                if let Some(node) = self.members.lock().left(&instance) {
                    tracing::info!("node {} ({}) left", node.id, node.name);
                    self.queries.stop_waiting_for(node.id);
                }
                self.count_nodes();
            }
            Control::Query {
                request,
                endpoint,
                limit,
            } => {
                if origin == self.node {
                    return;
                }
                let Some(registry) = self.registry.upgrade() else {
                    return;
                };
                let (connections, total) = registry.list_first(endpoint.as_deref(), limit);
                let truncated = total > connections.len();
                let answer = Control::Answer {
                    request,
                    node: self.this_node(),
                    connections,
                    truncated,
                };
                self.queue(self.channels.of_node(origin), self.control(&answer));
            }
            Control::Answer {
                request,
                node,
                connections,
                truncated,
            } => self.queries.answered(request, node, connections, truncated),
        }
    }

    /// Whether a hello or heartbeat of `origin` is this node's number in another run: two nodes
    /// with one number would confuse every id, so it is reported loudly.
    fn conflicts(&self, origin: NodeId, instance: &str) -> bool {
        if origin != self.node {
            return false;
        }
        if instance != self.instance {
            tracing::error!(
                "another node announces number {origin}, this node's: connection ids of the two \
                 collide (restart one of them; numbers are claimed in the broker for {} s)",
                NODE_LEASE.as_secs()
            );
        }
        true
    }

    /// A node said hello or sent a heartbeat.
    fn joined(&self, node: NodeInfo, instance: &str) {
        let (id, name) = (node.id, node.name.clone());
        let heard = self.members.lock().heard(node, instance);
        if heard == Heard::Joined {
            tracing::info!("node {id} ({name}) joined");
            self.count_nodes();
        }
    }

    /// Reports bytes from the broker that are not an envelope of ours, once per run.
    fn unreadable(&self, what: &str) {
        if !self.reported_unreadable.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "broker: dropped a message that is not a Switchboard envelope of this version \
                 ({what}); a node of another version, or another program, publishes under this \
                 prefix (further ones are dropped silently)"
            );
        }
    }
}

/// Claims a free node number, trying random ones.
async fn claim_node(
    publisher: &mut dyn broker::Publisher,
    channels: &Channels,
    instance: &str,
) -> Result<NodeId, BrokerError> {
    for _ in 0..64 {
        let node = candidate_node();
        let name = format!("{}{node}", channels.claim);
        if publisher.claim(&name, instance, NODE_LEASE).await? {
            return Ok(node);
        }
    }
    Err(BrokerError(
        "64 random node numbers were all taken".to_string(),
    ))
}

impl RemoteNodes for Cluster {
    fn node(&self) -> NodeId {
        self.node
    }

    fn publish(&self, topic: &str, message: &Message) {
        if !self.has_members() {
            return;
        }
        if let Some(envelope) = envelope::publish(self.node, message) {
            self.queue(self.channels.of_topic(topic), envelope);
        }
    }

    fn broadcast(&self, endpoint: &str, message: &Message, except: &[ConnectionId]) {
        if !self.has_members() {
            return;
        }
        if let Some(envelope) = envelope::broadcast(self.node, message, except) {
            self.queue(self.channels.of_endpoint(endpoint), envelope);
        }
    }

    fn send(&self, id: ConnectionId, message: &Message) -> Result<(), SendError> {
        self.to_node_of(id, || envelope::send(self.node, id, message))
    }

    fn close(&self, id: ConnectionId, code: u16, reason: &str) -> Result<(), SendError> {
        self.to_node_of(id, || Some(envelope::close(self.node, id, code, reason)))
    }

    fn interest(&self, interest: Interest<'_>, held: bool) {
        let channel = match interest {
            Interest::Topic(topic) => self.channels.of_topic(topic),
            Interest::Endpoint(endpoint) => self.channels.of_endpoint(endpoint),
        };
        self.wanted.set(channel, held);
    }

    fn all_connections(
        &self,
        endpoint: Option<String>,
        limit: usize,
        deadline: Duration,
    ) -> BoxFuture<'static, Presence> {
        let local = match self.registry.upgrade() {
            Some(registry) => {
                let (connections, total) = registry.list_first(endpoint.as_deref(), limit);
                let truncated = total > connections.len();
                (connections, truncated)
            }
            None => (Vec::new(), false),
        };
        let this = self.this_node();
        let others = self.members.lock().list();
        if others.is_empty() {
            return futures_util::future::ready(presence::assemble(local, this, None, Vec::new()))
                .boxed();
        }
        if !self.up.load(Ordering::Relaxed) {
            return futures_util::future::ready(presence::assemble(local, this, None, others))
                .boxed();
        }
        let (request, completed) = self.queries.open(others);
        let query = Control::Query {
            request,
            endpoint,
            limit,
        };
        self.queue(self.channels.control.clone(), self.control(&query));
        let this_cluster = self.this.clone();
        async move {
            let _ = tokio::time::timeout(deadline, completed).await;
            let query = this_cluster
                .upgrade()
                .and_then(|cluster| cluster.queries.close(request));
            presence::assemble(local, this, query, Vec::new())
        }
        .boxed()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = vec![self.this_node()];
        nodes.extend(self.members.lock().list());
        nodes
    }
}

impl Inbox for Cluster {
    fn deliver(&self, channel: &[u8], payload: Bytes) {
        let Some(origin) = envelope::origin(&payload) else {
            return self.unreadable("shorter than a header");
        };
        let control =
            channel == self.channels.control.as_bytes() || channel == self.own_channel.as_bytes();
        if origin == self.node && !control {
            return; // our own publish or broadcast, delivered here already
        }
        if origin != self.node {
            self.stats
                .broker
                .messages_in
                .fetch_add(1, Ordering::Relaxed);
        }
        let envelope = match envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => return self.unreadable(&error.to_string()),
        };
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let named = |prefix: &str| {
            channel
                .strip_prefix(prefix.as_bytes())
                .and_then(|name| std::str::from_utf8(name).ok())
        };
        match envelope.body {
            Body::Publish(message) => {
                if let Some(topic) = named(&self.channels.topic) {
                    registry.publish_here(topic, message);
                }
            }
            Body::Broadcast { except, message } => {
                if let Some(endpoint) = named(&self.channels.endpoint) {
                    registry.broadcast_here(endpoint, message, &except);
                }
            }
            Body::Send { id, message } => {
                if let Err(error) = registry.send_here(id, message) {
                    tracing::debug!("send from node {origin}: {error}");
                }
            }
            Body::Close { id, code, reason } => {
                // Checked as the handler's own disconnect is: the bytes came over the network.
                let closed = checked_close(u32::from(code), &reason)
                    .map_err(|error| error.to_string())
                    .and_then(|code| {
                        registry
                            .close_here(id, code, reason)
                            .map_err(|error| error.to_string())
                    });
                if let Err(error) = closed {
                    tracing::debug!("disconnect from node {origin}: {error}");
                }
            }
            Body::Control(json) => self.on_control(origin, &json),
        }
    }
}
