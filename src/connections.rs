//! Every open inbound connection, by id: the one place where isolates find a socket to send to.
//!
//! Sockets belong to the server; an isolate only ever holds connection ids. Sending pushes onto
//! the connection's bounded outbound queue, so a handler's `send` never waits for the network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Identifies one connection for the life of the process; never reused.
pub type ConnectionId = u64;

/// How many outbound messages may wait for a slow reader before the connection is closed.
pub const DEFAULT_SEND_QUEUE: usize = 1_000;

/// What the writer task of a connection is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Message(Message),
    /// Send a close frame with this code and reason, after everything queued before it.
    Close {
        code: u16,
        reason: String,
    },
}

/// The network side's handle on one connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// The endpoint the connection was upgraded on.
    pub endpoint: Arc<str>,
    /// The peer, for logs and listings.
    pub remote_address: SocketAddr,
    /// When the upgrade completed.
    pub opened_at: SystemTime,
    /// The writer task's queue.
    outbound: mpsc::Sender<Outbound>,
    /// Closes the connection at once, ahead of its queue (used when the queue cannot take more).
    close_signal: Arc<CloseSignal>,
}

/// A close request that overtakes the outbound queue.
#[derive(Debug, Default)]
pub struct CloseSignal {
    requested: parking_lot::Mutex<Option<(u16, String)>>,
    notify: tokio::sync::Notify,
}

impl CloseSignal {
    /// Records the first request; later ones keep the first code and reason.
    pub fn request(&self, code: u16, reason: String) {
        let mut requested = self.requested.lock();
        if requested.is_none() {
            *requested = Some((code, reason));
        }
        drop(requested);
        self.notify.notify_one();
    }

    /// Waits for a request and returns its code and reason.
    pub async fn requested(&self) -> (u16, String) {
        loop {
            if let Some(request) = self.requested.lock().clone() {
                return request;
            }
            self.notify.notified().await;
        }
    }
}

/// Why a send to a connection did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("connection {0} is not open")]
    NotOpen(ConnectionId),
    #[error("connection {0}'s send queue is full: the peer is not reading; the connection is being closed")]
    QueueFull(ConnectionId),
}

/// All open inbound connections.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    connections: RwLock<HashMap<ConnectionId, ConnectionEntry>>,
    next_id: AtomicU64,
}

impl ConnectionRegistry {
    pub fn new() -> Self {
        Self {
            connections: RwLock::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Registers a connection and returns its id.
    pub fn register(
        &self,
        endpoint: Arc<str>,
        remote_address: SocketAddr,
        outbound: mpsc::Sender<Outbound>,
        close_signal: Arc<CloseSignal>,
    ) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections.write().insert(
            id,
            ConnectionEntry {
                endpoint,
                remote_address,
                opened_at: SystemTime::now(),
                outbound,
                close_signal,
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
        match entry.outbound.try_send(Outbound::Message(message)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::NotOpen(id)),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection = id, endpoint = %entry.endpoint, peer = %entry.remote_address,
                    "send queue full (the peer is not reading): closing the connection with 1008");
                entry.close_signal.request(1008, "send queue full".into());
                Err(SendError::QueueFull(id))
            }
        }
    }

    /// Asks a connection to close after the messages already queued.
    pub fn close(&self, id: ConnectionId, code: u16, reason: String) -> Result<(), SendError> {
        let connections = self.connections.read();
        let entry = connections.get(&id).ok_or(SendError::NotOpen(id))?;
        match entry.outbound.try_send(Outbound::Close {
            code,
            reason: reason.clone(),
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::NotOpen(id)),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The close must not be lost behind a full queue.
                entry.close_signal.request(code, reason);
                Ok(())
            }
        }
    }

    /// Closes a connection ahead of anything still queued for it.
    pub fn close_now(&self, id: ConnectionId, code: u16, reason: String) -> Result<(), SendError> {
        let connections = self.connections.read();
        let entry = connections.get(&id).ok_or(SendError::NotOpen(id))?;
        entry.close_signal.request(code, reason);
        Ok(())
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
