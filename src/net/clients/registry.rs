//! Every live client of the runtime, whichever isolate created it: its status, its queue, and
//! what `getClients()` lists. Clients leave it when they close, before their `onClose` runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::options::DataType;
use crate::event::ClientId;
use crate::net::outbox::{Outbox, PushError};

/// The status names of 4D's WebSocket class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClientStatus {
    /// Registered; connecting (or not yet started: its creator's JavaScript has not yielded).
    Connecting,
    /// Open.
    Connected,
    /// A close was requested or received.
    Closing,
    /// Closed: it has left the registry.
    Closed,
}

impl ClientStatus {
    /// The name handlers see.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Connecting => "Connecting",
            ClientStatus::Connected => "Connected",
            ClientStatus::Closing => "Closing",
            ClientStatus::Closed => "Closed",
        }
    }
}

/// What `getClients()` lists.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    /// The client's id.
    pub id: ClientId,
    /// The URI it connects to.
    pub uri: String,
    /// Its handler, as a workspace path.
    pub handler: String,
    /// Where it is in its life.
    pub status: ClientStatus,
}

/// What a client's handler isolate needs to know about it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// The client's id.
    pub id: ClientId,
    /// The URI it connects to.
    pub uri: String,
    /// Its handler, as a workspace path.
    pub handler: String,
    /// How its messages are handed to the handler.
    pub data_type: DataType,
}

/// The network side's handle on one client.
#[derive(Debug)]
pub struct ClientEntry {
    /// The URI it connects to.
    pub uri: String,
    /// The handler as shown to users (workspace path, with extension).
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// How its messages are handed to the handler.
    pub data_type: DataType,
    /// The handler module that created the client; its clients close when it is replaced.
    pub creator: String,
    /// Where it is in its life.
    status: Mutex<ClientStatus>,
    /// The subprotocol the server agreed to, once connected.
    protocol: Mutex<Option<String>>,
    /// The queue its pump writes from.
    outbox: Outbox,
}

impl ClientEntry {
    /// Where it is in its life.
    pub fn status(&self) -> ClientStatus {
        *self.status.lock()
    }

    /// The subprotocol the server agreed to, once connected.
    pub fn protocol(&self) -> Option<String> {
        self.protocol.lock().clone()
    }

    /// What its handler's isolate needs to know about it.
    fn info(&self, id: ClientId) -> ClientInfo {
        ClientInfo {
            id,
            uri: self.uri.clone(),
            handler: self.handler.clone(),
            data_type: self.data_type,
        }
    }

    /// Moves it to `status`.
    pub(super) fn set_status(&self, status: ClientStatus) {
        *self.status.lock() = status;
    }

    /// The handshake succeeded: it is "Connected" (unless a close was asked for meanwhile), with
    /// the subprotocol the server agreed to.
    pub(super) fn connected(&self, protocol: Option<String>) {
        *self.protocol.lock() = protocol;
        let mut status = self.status.lock();
        if *status == ClientStatus::Connecting {
            *status = ClientStatus::Connected;
        }
    }
}

/// Why a client operation failed; each message names the client and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client is not open for sending.
    #[error("client {id}: cannot send: the client is {status}")]
    NotOpen {
        /// The client.
        id: ClientId,
        /// Its status.
        status: &'static str,
    },
    /// The server stopped reading; the client is being closed.
    #[error(
        "client {0}'s send queue is full: the server is not reading; the client is being closed"
    )]
    QueueFull(ClientId),
    /// `createWebsocket` was called with something unusable (the message says what).
    #[error("createWebsocket: {0}")]
    Invalid(String),
}

/// Every live client of the runtime, whichever isolate created it.
#[derive(Debug)]
pub struct ClientRegistry {
    /// The live clients.
    clients: RwLock<BTreeMap<ClientId, Arc<ClientEntry>>>,
    /// Closed clients whose handler has not yet run `onClose`: their events still need to
    /// describe them. The handler's isolate forgets them after `onClose`.
    retired: Mutex<BTreeMap<ClientId, ClientInfo>>,
    /// The id the next client gets.
    next_id: AtomicU64,
    /// Client tasks still running (a task outlives its registry entry by its `onClose`).
    tasks: watch::Sender<usize>,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        Self {
            clients: RwLock::default(),
            retired: Mutex::default(),
            next_id: AtomicU64::new(1),
            tasks: watch::Sender::new(0),
        }
    }
}

/// What a new client is registered with.
pub(super) struct NewClient {
    /// The URI it connects to.
    pub uri: String,
    /// The handler as shown to users.
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// How its messages are handed to the handler.
    pub data_type: DataType,
    /// The handler module that creates it.
    pub creator: String,
}

impl ClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new client (status "Connecting") whose queue's sending side is `outbox`.
    pub(super) fn insert(&self, entry: NewClient, outbox: Outbox) -> (ClientId, Arc<ClientEntry>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ClientEntry {
            uri: entry.uri,
            handler: entry.handler,
            handler_file: entry.handler_file,
            data_type: entry.data_type,
            creator: entry.creator,
            status: Mutex::new(ClientStatus::Connecting),
            protocol: Mutex::new(None),
            outbox,
        });
        self.clients.write().insert(id, entry.clone());
        (id, entry)
    }

    /// A client task started (counted until [`Self::task_ended`]).
    pub(super) fn task_started(&self) {
        self.tasks.send_modify(|n| *n += 1);
    }

    /// A client task ended.
    pub(super) fn task_ended(&self) {
        self.tasks.send_modify(|n| *n -= 1);
    }

    /// A live client.
    pub fn get(&self, id: ClientId) -> Option<Arc<ClientEntry>> {
        self.clients.read().get(&id).cloned()
    }

    /// How many clients were ever created.
    pub fn created(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    /// How many clients are live.
    pub fn len(&self) -> usize {
        self.clients.read().len()
    }

    /// Whether no client is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once no client task is running.
    pub async fn until_all_finished(&self) {
        let mut tasks = self.tasks.subscribe();
        let _ = tasks.wait_for(|n| *n == 0).await;
    }

    /// Every live client, oldest first.
    pub fn list(&self) -> Vec<ClientSummary> {
        self.clients
            .read()
            .iter()
            .map(|(id, entry)| ClientSummary {
                id: *id,
                uri: entry.uri.clone(),
                handler: entry.handler.clone(),
                status: entry.status(),
            })
            .collect()
    }

    /// Describes a live client, or a closed one whose `onClose` has not run yet.
    pub fn info(&self, id: ClientId) -> Option<ClientInfo> {
        match self.get(id) {
            Some(entry) => Some(entry.info(id)),
            None => self.retired.lock().get(&id).cloned(),
        }
    }

    /// Called after the handler's `onClose` for the client has run.
    pub fn forget(&self, id: ClientId) {
        self.retired.lock().remove(&id);
    }

    /// The oldest live client whose handler is `handler` (with or without its extension).
    pub fn by_handler(&self, handler: &str) -> Option<ClientId> {
        let wanted = handler.trim_start_matches("./");
        self.clients
            .read()
            .iter()
            .find(|(_, entry)| {
                entry.handler == wanted
                    || entry
                        .handler
                        .rsplit_once('.')
                        .is_some_and(|(stem, _)| stem == wanted)
            })
            .map(|(id, _)| *id)
    }

    /// Queues a message; while the client is connecting it waits and goes out in order on open.
    pub fn send(&self, id: ClientId, message: Message) -> Result<(), ClientError> {
        let entry = self.get(id).ok_or(ClientError::NotOpen {
            id,
            status: ClientStatus::Closed.as_str(),
        })?;
        let status = entry.status();
        if !matches!(status, ClientStatus::Connecting | ClientStatus::Connected) {
            return Err(ClientError::NotOpen {
                id,
                status: status.as_str(),
            });
        }
        match entry.outbox.push(message) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(ClientError::NotOpen {
                id,
                status: ClientStatus::Closed.as_str(),
            }),
            Err(PushError::Closing) => Err(ClientError::NotOpen {
                id,
                status: ClientStatus::Closing.as_str(),
            }),
            Err(PushError::Full) => {
                tracing::warn!(client = id, uri = %entry.uri, "send queue full: closing the client with 1008");
                entry.set_status(ClientStatus::Closing);
                Err(ClientError::QueueFull(id))
            }
        }
    }

    /// Closes a client after what is already queued (also while it is still connecting).
    /// Closing a client that is already closing or closed does nothing.
    pub fn close(&self, id: ClientId, code: u16, reason: String) {
        let Some(entry) = self.get(id) else { return };
        let status = entry.status();
        if !matches!(status, ClientStatus::Connecting | ClientStatus::Connected) {
            return;
        }
        entry.set_status(ClientStatus::Closing);
        let _ = entry.outbox.close(code, reason);
    }

    /// Closes every client (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let ids: Vec<ClientId> = self.clients.read().keys().copied().collect();
        for id in &ids {
            self.close(*id, code, reason.to_string());
        }
        ids.len()
    }

    /// The live clients created by the handler module `creator`.
    pub fn created_by(&self, creator: &str) -> Vec<ClientId> {
        self.clients
            .read()
            .iter()
            .filter(|(_, entry)| entry.creator == creator)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The client has ended: it leaves the list (and `getClients()`), kept as retired until its
    /// handler's `onClose` has run.
    pub(super) fn remove(&self, id: ClientId) {
        let removed = self.clients.write().remove(&id);
        if let Some(entry) = removed {
            entry.set_status(ClientStatus::Closed);
            self.retired.lock().insert(id, entry.info(id));
        }
    }
}
