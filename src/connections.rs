//! Every open inbound connection, by id: the one place where isolates find a socket to send to.
//!
//! Sockets belong to the server; an isolate only ever holds connection ids. Sending pushes onto
//! the connection's bounded outbound queue, so a handler's `send` never waits for the network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tokio_tungstenite::tungstenite::Message;

use crate::outbox::{Outbox, PushError};

/// Identifies one connection for the life of the process; never reused.
pub type ConnectionId = u64;

/// The network side's handle on one connection.
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
    /// The writer task's queue.
    outbox: Outbox,
}

/// Why a send to a connection did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("connection {0} is not open")]
    NotOpen(ConnectionId),
    #[error("connection {0} is closing: nothing more can be sent on it")]
    Closing(ConnectionId),
    #[error("connection {0}'s send queue is full: the peer is not reading; the connection is being closed with 1008")]
    QueueFull(ConnectionId),
}

/// Why an upgrade could not reserve a connection slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("the server has reached its limit of {0} open connections; try again later")]
    Server(usize),
    #[error(
        "endpoint {endpoint} has reached its limit of {limit} open connections; try again later"
    )]
    Endpoint { endpoint: String, limit: usize },
}

/// A connection slot held from the upgrade until the connection ends.
#[derive(Debug)]
pub struct Reservation {
    registry: Arc<ConnectionRegistry>,
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

/// All open inbound connections.
#[derive(Debug)]
pub struct ConnectionRegistry {
    connections: RwLock<HashMap<ConnectionId, ConnectionEntry>>,
    next_id: AtomicU64,
    /// Connections reserved or open: in total, and per endpoint.
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

impl Default for ConnectionRegistry {
    fn default() -> Self {
        Self {
            connections: RwLock::default(),
            next_id: AtomicU64::new(1),
            counts: Mutex::default(),
        }
    }
}

impl ConnectionRegistry {
    pub fn new() -> Self {
        Self::default()
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
        self.connections.write().insert(
            id,
            ConnectionEntry {
                endpoint,
                remote_address,
                opened_at: SystemTime::now(),
                data,
                outbox,
            },
        );
        id
    }

    pub fn remove(&self, id: ConnectionId) {
        self.connections.write().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.connections.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a message without waiting. A full queue means the peer stopped reading: the
    /// connection is closed with 1008 rather than letting memory grow without bound.
    pub fn send(&self, id: ConnectionId, message: Message) -> Result<(), SendError> {
        let connections = self.connections.read();
        let entry = connections.get(&id).ok_or(SendError::NotOpen(id))?;
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
        let connections = self.connections.read();
        let entry = connections.get(&id).ok_or(SendError::NotOpen(id))?;
        entry
            .outbox
            .close(code, reason)
            .map_err(|_| SendError::NotOpen(id))
    }

    /// Closes every open connection after its queued messages (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let connections = self.connections.read();
        for entry in connections.values() {
            let _ = entry.outbox.close(code, reason.to_string());
        }
        connections.len()
    }

    /// The endpoint a connection was opened on.
    pub fn endpoint_of(&self, id: ConnectionId) -> Option<String> {
        self.connections
            .read()
            .get(&id)
            .map(|e| e.endpoint.to_string())
    }

    /// Ids of the open connections of one endpoint.
    pub fn ids_of_endpoint(&self, endpoint: &str) -> Vec<ConnectionId> {
        self.connections
            .read()
            .iter()
            .filter(|(_, entry)| &*entry.endpoint == endpoint)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Counts of open connections per endpoint.
    pub fn counts_by_endpoint(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for entry in self.connections.read().values() {
            *counts.entry(entry.endpoint.to_string()).or_insert(0) += 1;
        }
        counts
    }
}
