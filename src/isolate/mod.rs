//! Everything that touches deno_core: one isolate per handler module, each on its own OS thread
//! with its own current-thread tokio runtime; module loading; pushing events into JavaScript.
//!
//! Events reach an isolate through a bounded channel. The isolate's thread drains every waiting
//! event per wake-up and calls the JS dispatcher directly for each (a direct call costs far less
//! than an awaited op on this engine), taking the reply as the call's return value.

pub mod modules;
mod runtime;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once, Weak};

use parking_lot::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::clients::{ClientId, ClientRegistry};
use crate::connections::{ConnectionId, ConnectionRegistry};
use modules::WorkspaceResolver;

pub use runtime::check_handler;

/// The engine handler code runs on, for logs and `--version`.
#[cfg(not(feature = "v8"))]
pub const ENGINE_NAME: &str = "QuickJS-ng via deno_core";
#[cfg(feature = "v8")]
pub const ENGINE_NAME: &str = "V8 via deno_core";

/// Events waiting for one isolate before the connections feeding it stop reading (backpressure).
const EVENT_QUEUE: usize = 4096;

/// Whose event it is: an inbound connection or an outbound client (separate id spaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Connection(ConnectionId),
    Client(ClientId),
}

impl Target {
    pub fn id(self) -> u64 {
        match self {
            Target::Connection(id) | Target::Client(id) => id,
        }
    }
}

/// One event for a handler, in arrival order per connection or client.
#[derive(Debug)]
pub enum IsolateEvent {
    Open {
        target: Target,
        /// The endpoint of an inbound connection.
        endpoint: Option<Arc<str>>,
        /// The subprotocol agreed with the server, for a client.
        protocol: Option<String>,
    },
    Text {
        target: Target,
        text: Utf8Bytes,
    },
    Binary {
        target: Target,
        data: Bytes,
    },
    Error {
        target: Target,
        message: String,
    },
    Close {
        target: Target,
        code: u16,
        reason: String,
        was_clean: bool,
    },
}

/// Why a handler could not be started. The message names the file and, for code errors, the line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerLoadError(pub String);

/// The runtime-wide services that an isolate's ops reach.
#[derive(Debug, Clone)]
pub struct Services {
    /// Inbound connections, for `conn.send` and `conn.close`.
    pub connections: Arc<ConnectionRegistry>,
    /// Outbound clients.
    pub clients: Arc<ClientRegistry>,
    /// The network side's runtime: sockets are driven there, never on an isolate's thread.
    pub network: tokio::runtime::Handle,
    /// Where a client's events go: the isolate of the client's handler.
    pub isolates: Weak<IsolateHost>,
}

/// A running handler module: its thread, and the queue its events go into.
#[derive(Debug)]
pub struct HandlerIsolate {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler's path relative to the workspace, as shown in logs.
    pub handler: String,
    events: mpsc::Sender<IsolateEvent>,
    /// True while the isolate has no pending timers, promises or events.
    idle: watch::Receiver<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl HandlerIsolate {
    /// Queues an event, waiting while the isolate's queue is full. Fails once the isolate is gone.
    pub async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
        self.events.send(event).await.map_err(|_| IsolateGone)
    }

    /// Resolves once the isolate has nothing left to do: no timers, no pending promises.
    pub async fn until_idle(&self) {
        let mut idle = self.idle.clone();
        let _ = idle.wait_for(|idle| *idle).await;
    }

    /// Watches the isolate's idleness.
    pub fn idle_watch(&self) -> watch::Receiver<bool> {
        self.idle.clone()
    }
}

/// The isolate stopped (its handler was unloaded); the event was not delivered.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the handler's isolate has stopped")]
pub struct IsolateGone;

/// Starts isolates for handler modules and keeps one per module.
#[derive(Debug)]
pub struct IsolateHost {
    resolver: WorkspaceResolver,
    services: Services,
    isolates: tokio::sync::Mutex<HashMap<PathBuf, Arc<HandlerIsolate>>>,
    live: Arc<AtomicUsize>,
}

/// Initialises the engine once per process, before any isolate is created.
pub fn init_engine() {
    static INIT: Once = Once::new();
    INIT.call_once(|| deno_core::JsRuntime::init_platform(None));
}

impl IsolateHost {
    /// Must be called inside the network side's tokio runtime, which client sockets will use.
    pub fn new(
        workspace_root: PathBuf,
        connections: Arc<ConnectionRegistry>,
        clients: Arc<ClientRegistry>,
    ) -> Arc<Self> {
        init_engine();
        let network = tokio::runtime::Handle::current();
        Arc::new_cyclic(|host| Self {
            resolver: WorkspaceResolver::new(workspace_root),
            services: Services {
                connections,
                clients,
                network,
                isolates: host.clone(),
            },
            isolates: Default::default(),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn resolver(&self) -> &WorkspaceResolver {
        &self.resolver
    }

    /// The isolate running `handler_file`, started (its module loaded and its top level run) if
    /// it is not running yet.
    pub async fn isolate_for(
        &self,
        handler_file: &Path,
    ) -> Result<Arc<HandlerIsolate>, HandlerLoadError> {
        let mut isolates = self.isolates.lock().await;
        if let Some(isolate) = isolates.get(handler_file) {
            if !isolate.events.is_closed() {
                return Ok(isolate.clone());
            }
        }
        let isolate = Arc::new(self.start(handler_file).await?);
        isolates.insert(handler_file.to_path_buf(), isolate.clone());
        Ok(isolate)
    }

    /// Stops the isolate of `handler_file`, if one runs: its thread ends once queued events ran.
    pub async fn stop(&self, handler_file: &Path) {
        self.isolates.lock().await.remove(handler_file);
    }

    /// Stops every isolate and waits (up to `limit`) for their threads to finish queued events.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        let isolates: Vec<_> = self.isolates.lock().await.drain().map(|(_, i)| i).collect();
        let threads: Vec<_> = isolates
            .iter()
            .filter_map(|isolate| isolate.thread.lock().take())
            .collect();
        drop(isolates);
        let join = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = tokio::time::timeout(limit, join).await;
    }

    /// How many isolate threads are alive.
    pub fn live_isolates(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    async fn start(&self, handler_file: &Path) -> Result<HandlerIsolate, HandlerLoadError> {
        let handler = self.resolver.display(handler_file);
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (ready, started) = oneshot::channel();
        let (idle_sender, idle) = watch::channel(false);
        let setup = runtime::IsolateSetup {
            handler_file: handler_file.to_path_buf(),
            handler: handler.clone(),
            resolver: self.resolver.clone(),
            services: self.services.clone(),
            idle: idle_sender,
        };
        let live = self.live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let thread_live = live.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("isolate:{handler}"))
            .spawn(move || {
                runtime::run_isolate_thread(setup, receiver, ready);
                thread_live.fetch_sub(1, Ordering::SeqCst);
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(error) => {
                live.fetch_sub(1, Ordering::SeqCst);
                return Err(HandlerLoadError(format!(
                    "{handler}: cannot start a thread: {error}"
                )));
            }
        };
        match started.await {
            Ok(Ok(())) => {
                tracing::debug!(handler, "isolate started");
                Ok(HandlerIsolate {
                    handler_file: handler_file.to_path_buf(),
                    handler,
                    events,
                    idle,
                    thread: Mutex::new(Some(thread)),
                })
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(HandlerLoadError(format!(
                "{handler}: the isolate's thread ended during start-up"
            ))),
        }
    }
}
