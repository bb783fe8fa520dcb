//! Every open inbound connection, by id: the one place where isolates find a socket to send to.
//!
//! Sockets belong to the server; an isolate only ever holds connection ids. Sending goes through
//! the connection's bounded outbound queue (or straight to the socket, see `direct` and `batch`),
//! so a handler's `send` never waits for the network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxBuildHasher;
use tokio_tungstenite::tungstenite::Message;

use super::outbox::{Outbox, OutboxHandle, PushError};
pub use super::records::{ConnectionInfo, SendError};
use super::remote::{first_id, node_of, Interest, NodeId, NodeInfo, RemoteNodes};
use crate::event::{epoch_millis, ConnectionId};
use crate::stats::Traffic;

/// The registry's handle on one connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// The endpoint the connection was upgraded on.
    pub endpoint: Arc<str>,
    /// The peer, for logs and listings.
    pub remote_address: SocketAddr,
    /// When the upgrade completed.
    pub opened_at: SystemTime,
    /// What the endpoint's `onUpgrade` attached to the connection, as JSON.
    pub data: Option<String>,
    /// Topics the connection subscribed to.
    pub topics: std::collections::BTreeSet<String>,
    /// The queue its pump writes from.
    outbox: Outbox,
    /// Its own message counts, once its pump runs.
    traffic: Option<Arc<Traffic>>,
}

/// Why an upgrade could not reserve a connection slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// Every connection the server allows is open.
    #[error("the server has reached its limit of {0} open connections; try again later")]
    Server(usize),
    /// Every connection the endpoint allows is open.
    #[error(
        "endpoint {endpoint} has reached its limit of {limit} open connections; try again later"
    )]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Its `maxConnections`.
        limit: usize,
    },
}

/// A connection slot held from the upgrade until the connection ends.
#[derive(Debug)]
pub struct Reservation {
    /// Where the slot is counted.
    registry: Arc<ConnectionRegistry>,
    /// The endpoint it counts for.
    endpoint: Arc<str>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut counts = self.registry.counts.lock();
        counts.0 = counts.0.saturating_sub(1);
        if let Some(count) = counts.1.get_mut(&*self.endpoint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.1.remove(&*self.endpoint);
            }
        }
    }
}

/// The open connections, by id and by endpoint, kept in step under one lock.
#[derive(Debug, Default)]
struct Open {
    /// Every open connection (FxHash: the ids are this node's counter, not a peer's input, and
    /// SipHash cost about 140 instructions for every reply looked up here).
    by_id: HashMap<ConnectionId, ConnectionEntry, FxBuildHasher>,
    /// Each endpoint's connections, in a dense map: a broadcast walks only its receivers and
    /// compares no endpoint names.
    by_endpoint: HashMap<Arc<str>, IndexMap<ConnectionId, OutboxHandle, FxBuildHasher>>,
}

/// Subscribers of topics that are not connections of the registry (STOMP sessions subscribed to
/// `/topic/{topic}`): a publish reaches them too. The server implements it; the registry knows
/// only this trait.
pub trait TopicRelay: Send + Sync + std::fmt::Debug {
    /// Delivers `message` to the relay's subscribers of `topic`; returns how many got it.
    fn publish(&self, topic: &str, message: &Message) -> usize;
}

/// All open inbound connections.
#[derive(Debug)]
pub struct ConnectionRegistry {
    /// The open connections.
    connections: RwLock<Open>,
    /// The id the next connection gets.
    next_id: AtomicU64,
    /// Connections reserved or open: in total, and per endpoint.
    counts: Mutex<(usize, HashMap<String, usize>)>,
    /// Subscribers of each topic.
    topics: RwLock<HashMap<String, std::collections::BTreeSet<ConnectionId>>>,
    /// Where publishes also go (STOMP subscribers), once set.
    relay: std::sync::OnceLock<Arc<dyn TopicRelay>>,
    /// The first id this node gave; its high bits are this node's number (0 without a broker).
    first_id: AtomicU64,
    /// This node's name and the address its clients connect to, once serving.
    identity: std::sync::OnceLock<(String, String)>,
    /// Other nodes, once a broker links them.
    remote: std::sync::OnceLock<Arc<dyn RemoteNodes>>,
    /// How many local holders each topic has (subscribed connections and STOMP subscriptions):
    /// the broker is told when a topic gains its first and loses its last.
    topic_holders: Mutex<HashMap<String, usize>>,
}

impl Default for ConnectionRegistry {
    fn default() -> Self {
        Self {
            connections: RwLock::default(),
            next_id: AtomicU64::new(1),
            counts: Mutex::default(),
            topics: RwLock::default(),
            relay: std::sync::OnceLock::new(),
            first_id: AtomicU64::new(1),
            identity: std::sync::OnceLock::new(),
            remote: std::sync::OnceLock::new(),
            topic_holders: Mutex::default(),
        }
    }
}

impl ConnectionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this node `node`: the ids given from now on carry it. Called before the first
    /// connection is registered (ids already given stay as they are).
    pub fn set_node(&self, node: NodeId) {
        self.first_id.store(first_id(node), Ordering::Relaxed);
        self.next_id.store(first_id(node), Ordering::Relaxed);
    }

    /// This node's number (0 without a broker).
    pub fn node(&self) -> NodeId {
        node_of(self.first_id.load(Ordering::Relaxed))
    }

    /// Names this node (`--node-name`) and the address it serves (set once, when serving).
    pub fn set_identity(&self, name: String, address: String) {
        let _ = self.identity.set((name, address));
    }

    /// This node, as `getNodes()` shows it.
    pub fn this_node(&self) -> NodeInfo {
        let (name, address) = self.identity.get().cloned().unwrap_or_default();
        NodeInfo {
            id: self.node(),
            name,
            address,
            connections: self.len(),
            this: true,
        }
    }

    /// Links other nodes (set once, when a broker is configured): publishes, broadcasts, sends
    /// and closes then reach them too.
    pub fn set_remote(&self, remote: Arc<dyn RemoteNodes>) {
        let _ = self.remote.set(remote);
    }

    /// The other nodes, if a broker links them.
    pub fn remote(&self) -> Option<&Arc<dyn RemoteNodes>> {
        self.remote.get()
    }

    /// The topics and endpoints this node holds now, for a broker that (re)subscribes.
    pub fn interests(&self) -> (Vec<String>, Vec<String>) {
        let topics = self.topic_holders.lock().keys().cloned().collect();
        let endpoints = self
            .connections
            .read()
            .by_endpoint
            .keys()
            .map(|e| e.to_string())
            .collect();
        (topics, endpoints)
    }

    /// One more (`true`) or one fewer local holder of `topic`; the broker hears of the first and
    /// the last.
    fn topic_holder(&self, topic: &str, arrived: bool) {
        let mut holders = self.topic_holders.lock();
        let changed = if arrived {
            let count = holders.entry(topic.to_string()).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match holders.get_mut(topic) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    holders.remove(topic);
                    true
                }
                None => false,
            }
        };
        // Told under the lock, so the broker sees a topic's arrivals and departures in order.
        if changed {
            if let Some(remote) = self.remote.get() {
                remote.interest(Interest::Topic(topic), arrived);
            }
        }
    }

    /// A STOMP subscription to `/topic/{topic}` began: the topic is held here.
    pub fn hold_topic(&self, topic: &str) {
        self.topic_holder(topic, true);
    }

    /// A STOMP subscription to `/topic/{topic}` ended.
    pub fn release_topic(&self, topic: &str) {
        self.topic_holder(topic, false);
    }

    /// Reserves a slot for a new connection of `endpoint`, within the limits.
    pub fn reserve(
        self: &Arc<Self>,
        endpoint: &Arc<str>,
        server_limit: usize,
        endpoint_limit: Option<usize>,
    ) -> Result<Reservation, CapacityError> {
        let mut counts = self.counts.lock();
        if counts.0 >= server_limit {
            return Err(CapacityError::Server(server_limit));
        }
        let of_endpoint = counts.1.get(&**endpoint).copied().unwrap_or(0);
        if let Some(limit) = endpoint_limit {
            if of_endpoint >= limit {
                return Err(CapacityError::Endpoint {
                    endpoint: endpoint.to_string(),
                    limit,
                });
            }
        }
        counts.0 += 1;
        counts.1.insert(endpoint.to_string(), of_endpoint + 1);
        Ok(Reservation {
            registry: self.clone(),
            endpoint: endpoint.clone(),
        })
    }

    /// Registers a connection and returns its id.
    pub fn register(
        &self,
        endpoint: Arc<str>,
        remote_address: SocketAddr,
        data: Option<String>,
        outbox: Outbox,
    ) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.connections.write();
        let of_endpoint = open.by_endpoint.entry(endpoint.clone()).or_default();
        if of_endpoint.is_empty() {
            if let Some(remote) = self.remote.get() {
                remote.interest(Interest::Endpoint(&endpoint), true);
            }
        }
        of_endpoint.insert(id, outbox.handle());
        open.by_id.insert(
            id,
            ConnectionEntry {
                endpoint,
                remote_address,
                opened_at: SystemTime::now(),
                data,
                topics: Default::default(),
                outbox,
                traffic: None,
            },
        );
        id
    }

    /// Gives connection `id` its own message counts (shown in listings).
    pub fn count_traffic(&self, id: ConnectionId, traffic: Arc<Traffic>) {
        if let Some(entry) = self.connections.write().by_id.get_mut(&id) {
            entry.traffic = Some(traffic);
        }
    }

    pub fn remove(&self, id: ConnectionId) {
        let removed = {
            let mut open = self.connections.write();
            let removed = open.by_id.remove(&id);
            if let Some(entry) = &removed {
                if let Some(of_endpoint) = open.by_endpoint.get_mut(&entry.endpoint) {
                    of_endpoint.swap_remove(&id);
                    if of_endpoint.is_empty() {
                        open.by_endpoint.remove(&entry.endpoint);
                        if let Some(remote) = self.remote.get() {
                            remote.interest(Interest::Endpoint(&entry.endpoint), false);
                        }
                    }
                }
            }
            removed
        };
        if let Some(entry) = removed {
            self.leave_topics(id, &entry.topics);
        }
    }

    /// Takes connection `id` off the subscribers of `topics` (a topic nobody holds any more is
    /// forgotten), then counts the holders down.
    fn leave_topics<'a>(
        &self,
        id: ConnectionId,
        topics: impl IntoIterator<Item = &'a String> + Copy,
    ) {
        {
            let mut subscribed = self.topics.write();
            for topic in topics {
                if let Some(subscribers) = subscribed.get_mut(topic) {
                    subscribers.remove(&id);
                    if subscribers.is_empty() {
                        subscribed.remove(topic);
                    }
                }
            }
        }
        for topic in topics {
            self.topic_holder(topic, false);
        }
    }

    fn info(id: ConnectionId, entry: &ConnectionEntry) -> ConnectionInfo {
        ConnectionInfo {
            id,
            node: node_of(id),
            endpoint: entry.endpoint.to_string(),
            remote_address: entry.remote_address.to_string(),
            opened_at: epoch_millis(entry.opened_at),
            data: entry.data.clone(),
            topics: entry.topics.iter().cloned().collect(),
            messages_in: entry
                .traffic
                .as_ref()
                .map_or(0, |t| t.messages_in.load(Ordering::Relaxed)),
            messages_out: entry
                .traffic
                .as_ref()
                .map_or(0, |t| t.messages_out.load(Ordering::Relaxed)),
        }
    }

    /// The open connections, optionally of one endpoint, oldest first.
    pub fn list(&self, endpoint: Option<&str>) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .connections
            .read()
            .by_id
            .iter()
            .filter(|(_, entry)| endpoint.is_none_or(|e| &*entry.endpoint == e))
            .map(|(id, entry)| Self::info(*id, entry))
            .collect();
        list.sort_by_key(|info| info.id);
        list
    }

    /// The oldest `limit` open connections (of one endpoint, or of all), and how many there are:
    /// a listing that stays small however many connections there are (the console's once a
    /// second, presence answers across nodes). Only the listed ones are described.
    pub fn list_first(&self, endpoint: Option<&str>, limit: usize) -> (Vec<ConnectionInfo>, usize) {
        let open = self.connections.read();
        let mut ids: Vec<ConnectionId> = match endpoint {
            Some(endpoint) => match open.by_endpoint.get(endpoint) {
                Some(of_endpoint) => of_endpoint.keys().copied().collect(),
                None => return (Vec::new(), 0),
            },
            None => open.by_id.keys().copied().collect(),
        };
        let total = ids.len();
        if total > limit {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        let list = ids
            .into_iter()
            .filter_map(|id| open.by_id.get(&id).map(|entry| Self::info(id, entry)))
            .collect();
        (list, total)
    }

    /// One open connection.
    pub fn get(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.connections
            .read()
            .by_id
            .get(&id)
            .map(|entry| Self::info(id, entry))
    }

    /// Sends one message (built once) to every connection of `endpoint` but those in `except`,
    /// here and (with a broker) on every other node. Returns how many here got it; a connection
    /// whose queue is full is closed with 1008.
    pub fn broadcast(&self, endpoint: &str, message: Message, except: &[ConnectionId]) -> usize {
        if let Some(remote) = self.remote.get() {
            remote.broadcast(endpoint, &message, except);
        }
        self.broadcast_here(endpoint, message, except)
    }

    /// [`Self::broadcast`] to this node's connections only (what another node's broadcast does
    /// here).
    pub fn broadcast_here(
        &self,
        endpoint: &str,
        message: Message,
        except: &[ConnectionId],
    ) -> usize {
        let open = self.connections.read();
        let Some(receivers) = open.by_endpoint.get(endpoint) else {
            return 0;
        };
        let mut delivered = 0;
        #[cfg(target_os = "linux")]
        let mut batch = super::batch::Batch::new(&message);
        for (index, (id, outbox)) in receivers.iter().enumerate() {
            if let Some((_, next)) = receivers.get_index(index + 1) {
                next.prefetch();
            }
            if except.contains(id) {
                continue;
            }
            #[cfg(target_os = "linux")]
            if let Some(batch) = &mut batch {
                if let Some(claim) = outbox.claim_direct() {
                    delivered += batch.add(claim);
                    continue;
                }
            }
            if outbox.push_copy(&message).is_ok() {
                delivered += 1;
            }
        }
        #[cfg(target_os = "linux")]
        if let Some(batch) = &mut batch {
            delivered += batch.flush();
        }
        delivered
    }

    /// Subscribes a connection to a topic.
    pub fn subscribe(&self, id: ConnectionId, topic: &str) -> Result<(), SendError> {
        let mut open = self.connections.write();
        let entry = open.by_id.get_mut(&id).ok_or(SendError::NotOpen(id))?;
        if !entry.topics.insert(topic.to_string()) {
            return Ok(());
        }
        self.topics
            .write()
            .entry(topic.to_string())
            .or_default()
            .insert(id);
        drop(open);
        self.topic_holder(topic, true);
        Ok(())
    }

    /// Unsubscribes a connection from a topic.
    pub fn unsubscribe(&self, id: ConnectionId, topic: &str) {
        let held = match self.connections.write().by_id.get_mut(&id) {
            Some(entry) => entry.topics.remove(topic),
            None => false,
        };
        if held {
            self.leave_topics(id, &[topic.to_string()]);
        }
    }

    /// Publishes also reach `relay`'s subscribers (set once, by the server).
    pub fn set_relay(&self, relay: Arc<dyn TopicRelay>) {
        let _ = self.relay.set(relay);
    }

    /// Sends one message (built once) to every subscriber of `topic`, the relay's included, here
    /// and (with a broker) on every other node; returns how many here got it.
    pub fn publish(&self, topic: &str, message: Message) -> usize {
        if let Some(remote) = self.remote.get() {
            remote.publish(topic, &message);
        }
        self.publish_here(topic, message)
    }

    /// [`Self::publish`] to this node's subscribers only (what another node's publish does here).
    pub fn publish_here(&self, topic: &str, message: Message) -> usize {
        let delivered = {
            let topics = self.topics.read();
            match topics.get(topic) {
                Some(subscribers) => {
                    let open = self.connections.read();
                    subscribers
                        .iter()
                        .filter_map(|id| open.by_id.get(id))
                        .filter(|entry| entry.outbox.push_copy(&message).is_ok())
                        .count()
                }
                None => 0,
            }
        };
        delivered
            + self
                .relay
                .get()
                .map_or(0, |relay| relay.publish(topic, &message))
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.connections.read().by_id.len()
    }

    /// How many connections were ever registered.
    pub fn registered(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - self.first_id.load(Ordering::Relaxed)
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a message without waiting. A full queue means the peer stopped reading: the
    /// connection is closed with 1008 rather than letting memory grow without bound.
    pub fn send(&self, id: ConnectionId, message: Message) -> Result<(), SendError> {
        if let Some(remote) = self.elsewhere(id) {
            return remote.send(id, &message);
        }
        self.send_here(id, message)
    }

    /// The other nodes, when connection `id` belongs to one of them.
    fn elsewhere(&self, id: ConnectionId) -> Option<&Arc<dyn RemoteNodes>> {
        if node_of(id) == self.node() {
            return None;
        }
        self.remote.get()
    }

    /// [`Self::send`] to a connection of this node.
    pub fn send_here(&self, id: ConnectionId, message: Message) -> Result<(), SendError> {
        let open = self.connections.read();
        let entry = open.by_id.get(&id).ok_or(SendError::NotOpen(id))?;
        match entry.outbox.push(message) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::NotOpen(id)),
            Err(PushError::Closing) => Err(SendError::Closing(id)),
            Err(PushError::Full) => {
                tracing::warn!(
                    "connection {id} ({}, {}): send queue full (the peer is not reading), closing with 1008",
                    entry.endpoint,
                    entry.remote_address
                );
                Err(SendError::QueueFull(id))
            }
        }
    }

    /// Asks a connection to close after the messages already queued.
    pub fn close(&self, id: ConnectionId, code: u16, reason: String) -> Result<(), SendError> {
        if let Some(remote) = self.elsewhere(id) {
            return remote.close(id, code, &reason);
        }
        self.close_here(id, code, reason)
    }

    /// [`Self::close`] of a connection of this node.
    pub fn close_here(&self, id: ConnectionId, code: u16, reason: String) -> Result<(), SendError> {
        let open = self.connections.read();
        let entry = open.by_id.get(&id).ok_or(SendError::NotOpen(id))?;
        entry
            .outbox
            .close(code, reason)
            .map_err(|_| SendError::NotOpen(id))
    }

    /// Closes every open connection after its queued messages (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let open = self.connections.read();
        for entry in open.by_id.values() {
            let _ = entry.outbox.close(code, reason.to_string());
        }
        open.by_id.len()
    }

    /// The endpoint a connection was opened on.
    pub fn endpoint_of(&self, id: ConnectionId) -> Option<String> {
        self.connections
            .read()
            .by_id
            .get(&id)
            .map(|e| e.endpoint.to_string())
    }

    /// Ids of the open connections of one endpoint.
    pub fn ids_of_endpoint(&self, endpoint: &str) -> Vec<ConnectionId> {
        self.connections
            .read()
            .by_endpoint
            .get(endpoint)
            .map(|of_endpoint| of_endpoint.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Counts of open connections per endpoint.
    pub fn counts_by_endpoint(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for entry in self.connections.read().by_id.values() {
            *counts.entry(entry.endpoint.to_string()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::QueueBounds;
    use crate::net::outbox::{outbox, Outbound, OutboxReader, Taken};
    use futures_util::task::noop_waker;
    use std::task::{Context, Poll};

    fn open(registry: &ConnectionRegistry, endpoint: &str) -> (ConnectionId, OutboxReader) {
        let (sender, reader) = outbox(QueueBounds::default());
        let address = "127.0.0.1:1".parse().unwrap();
        (
            registry.register(endpoint.into(), address, None, sender),
            reader,
        )
    }

    fn queued(reader: &OutboxReader) -> Vec<String> {
        match reader.poll_take(&mut Context::from_waker(&noop_waker())) {
            Poll::Ready(Taken::Batch(batch)) => batch
                .into_iter()
                .map(|item| match item {
                    Outbound::Message(m) => m.into_text().unwrap().to_string(),
                    other => panic!("expected a message, got {other:?}"),
                })
                .collect(),
            Poll::Pending => Vec::new(),
            Poll::Ready(other) => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_bounded_listing_shows_the_oldest_and_counts_them_all() {
        let registry = ConnectionRegistry::new();
        let opened: Vec<(ConnectionId, OutboxReader)> =
            (0..5).map(|_| open(&registry, "room")).collect();
        let _lobby = open(&registry, "lobby");
        let (shown, total) = registry.list_first(Some("room"), 2);
        assert_eq!(total, 5);
        let ids: Vec<ConnectionId> = shown.iter().map(|c| c.id).collect();
        assert_eq!(ids, [opened[0].0, opened[1].0]);
        registry.remove(opened[0].0);
        let (shown, total) = registry.list_first(Some("room"), 10);
        assert_eq!((shown.len(), total), (4, 4));
        assert_eq!(registry.list_first(Some("nowhere"), 3).1, 0);
        assert_eq!(registry.list_first(None, 10).1, 5, "the lobby's too");
    }

    #[test]
    fn a_broadcast_reaches_its_endpoint_only_and_not_the_connections_that_left() {
        let registry = ConnectionRegistry::new();
        let (a, a_reader) = open(&registry, "room");
        let (b, b_reader) = open(&registry, "room");
        let (c, c_reader) = open(&registry, "room");
        let (_, lobby_reader) = open(&registry, "lobby");
        assert_eq!(registry.broadcast("room", Message::text("one"), &[b]), 2);
        assert_eq!(queued(&a_reader), ["one"]);
        assert_eq!(queued(&b_reader), Vec::<String>::new());
        assert_eq!(queued(&c_reader), ["one"]);
        assert_eq!(queued(&lobby_reader), Vec::<String>::new());

        registry.remove(a);
        assert_eq!(registry.broadcast("room", Message::text("two"), &[]), 2);
        assert_eq!(queued(&b_reader), ["two"]);
        assert_eq!(queued(&c_reader), ["two"]);
        assert_eq!(registry.ids_of_endpoint("room").len(), 2);

        registry.remove(b);
        registry.remove(c);
        assert_eq!(registry.broadcast("room", Message::text("three"), &[]), 0);
        assert!(registry.ids_of_endpoint("room").is_empty());
        assert_eq!(registry.list(None).len(), 1);
        assert_eq!(queued(&lobby_reader), Vec::<String>::new());
    }
}
