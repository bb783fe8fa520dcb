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
use std::sync::{Arc, Once};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

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

/// One event for a handler, in arrival order per connection.
#[derive(Debug)]
pub enum IsolateEvent {
    Open {
        connection: ConnectionId,
        endpoint: Arc<str>,
    },
    Text {
        connection: ConnectionId,
        text: Utf8Bytes,
    },
    Binary {
        connection: ConnectionId,
        data: Bytes,
    },
    Error {
        connection: ConnectionId,
        message: String,
    },
    Close {
        connection: ConnectionId,
        code: u16,
        reason: String,
        was_clean: bool,
    },
}

/// Why a handler could not be started. The message names the file and, for code errors, the line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerLoadError(pub String);

/// A running handler module: its thread, and the queue its events go into.
#[derive(Debug)]
pub struct HandlerIsolate {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler's path relative to the workspace, as shown in logs.
    pub handler: String,
    events: mpsc::Sender<IsolateEvent>,
    /// Shared with the host so that `live_isolates` counts threads, not handles.
    live: Arc<AtomicUsize>,
}

impl HandlerIsolate {
    /// Queues an event, waiting while the isolate's queue is full. Fails once the isolate is gone.
    pub async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
        self.events.send(event).await.map_err(|_| IsolateGone)
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
    connections: Arc<ConnectionRegistry>,
    isolates: tokio::sync::Mutex<HashMap<PathBuf, Arc<HandlerIsolate>>>,
    live: Arc<AtomicUsize>,
}

/// Initialises the engine once per process, before any isolate is created.
pub fn init_engine() {
    static INIT: Once = Once::new();
    INIT.call_once(|| deno_core::JsRuntime::init_platform(None));
}

impl IsolateHost {
    pub fn new(workspace_root: PathBuf, connections: Arc<ConnectionRegistry>) -> Self {
        init_engine();
        Self {
            resolver: WorkspaceResolver::new(workspace_root),
            connections,
            isolates: Default::default(),
            live: Arc::new(AtomicUsize::new(0)),
        }
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

    /// How many isolate threads are alive.
    pub fn live_isolates(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    async fn start(&self, handler_file: &Path) -> Result<HandlerIsolate, HandlerLoadError> {
        let handler = self.resolver.display(handler_file);
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (ready, started) = oneshot::channel();
        let setup = runtime::IsolateSetup {
            handler_file: handler_file.to_path_buf(),
            handler: handler.clone(),
            resolver: self.resolver.clone(),
            connections: self.connections.clone(),
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
        if let Err(error) = spawned {
            live.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerLoadError(format!(
                "{handler}: cannot start a thread: {error}"
            )));
        }
        match started.await {
            Ok(Ok(())) => {
                tracing::debug!(handler, "isolate started");
                Ok(HandlerIsolate {
                    handler_file: handler_file.to_path_buf(),
                    handler,
                    events,
                    live,
                })
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(HandlerLoadError(format!(
                "{handler}: the isolate's thread ended during start-up"
            ))),
        }
    }
}

impl Drop for HandlerIsolate {
    fn drop(&mut self) {
        tracing::debug!(handler = %self.handler, live = self.live.load(Ordering::SeqCst), "isolate handle dropped");
    }
}
