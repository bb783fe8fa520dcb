//! Everything that touches deno_core: one isolate per handler module, each on its own OS thread
//! with its own current-thread tokio runtime, which also drives the sockets of the handler's
//! connections (see [`SocketHome`]); module loading; pushing events into JavaScript.
//!
//! Events reach an isolate through a bounded channel. The isolate's thread drains every waiting
//! event per wake-up and calls the JS dispatcher directly for each (a direct call costs far less
//! than an awaited op on this engine), taking the reply as the call's return value.

pub mod modules;
mod runtime;
mod watchdog;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once, Weak};

use parking_lot::{Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::task::TaskTracker;

use crate::clients::{ClientId, ClientRegistry};
use crate::connections::{ConnectionId, ConnectionRegistry};
use crate::limits::Limits;
use crate::stats::Stats;
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
        /// What `onUpgrade` attached to an inbound connection, as JSON.
        data: Option<String>,
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
        /// The endpoint of an inbound connection: the isolate may not know the connection yet
        /// (its handler was reloaded since it opened).
        endpoint: Option<Arc<str>>,
    },
    /// Ask the handler's `onUpgrade` whether a connection may open.
    Upgrade {
        /// The request, as JSON for `onUpgrade(request)`.
        request: String,
        decision: oneshot::Sender<UpgradeDecision>,
    },
    /// Run `onStart`, `onTick` or `onStop` for an endpoint; `done` answers when it has finished
    /// (an async one included).
    Service {
        call: ServiceCall,
        endpoint: Arc<str>,
        done: oneshot::Sender<()>,
    },
    /// Replace the handler's code by the module's current version. It travels in the same
    /// queue as the events, so every event before it runs the old code, every event after it
    /// the new code.
    Reload {
        done: oneshot::Sender<Result<(), HandlerLoadError>>,
    },
}

/// The lifecycle and periodic exports of a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceCall {
    Start,
    Tick,
    Stop,
}

impl ServiceCall {
    pub fn export(self) -> &'static str {
        match self {
            ServiceCall::Start => "onStart",
            ServiceCall::Tick => "onTick",
            ServiceCall::Stop => "onStop",
        }
    }
}

/// What a handler's `onUpgrade` decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum UpgradeDecision {
    /// Open the connection; `data` (JSON) becomes `conn.data`.
    Accept { data: Option<String> },
    /// Answer the upgrade request with this HTTP status and reason.
    Refuse { status: u16, reason: String },
}

/// Which optional exports the handler's current code has, so that the network side asks only
/// handlers that care (an `onUpgrade` round trip costs every upgrade a wait for the isolate).
#[derive(Debug, Default)]
pub struct HandlerFeatures {
    pub on_upgrade: std::sync::atomic::AtomicBool,
    pub on_tick: std::sync::atomic::AtomicBool,
}

impl HandlerFeatures {
    /// Records the export names of newly loaded code.
    pub fn set_exports(&self, names: &[&str]) {
        let has = |name: &str| names.contains(&name);
        self.on_upgrade.store(has("onUpgrade"), Ordering::SeqCst);
        self.on_tick.store(has("onTick"), Ordering::SeqCst);
    }
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
    /// The network side's runtime: outbound clients' sockets are driven there.
    pub network: tokio::runtime::Handle,
    /// Where a client's events go: the isolate of the client's handler.
    pub isolates: Weak<IsolateHost>,
    /// Limits on queues, events and heaps.
    pub limits: Arc<Limits>,
    /// Counters for `/metrics`.
    pub stats: Arc<Stats>,
}

/// A running handler module: its thread, and the queue its events go into.
#[derive(Debug)]
pub struct HandlerIsolate {
    events: mpsc::Sender<IsolateEvent>,
    /// True while the isolate has no pending timers, promises or events.
    idle: watch::Receiver<bool>,
    /// The files its module graph was read from, to tell when it must be reloaded.
    resolver: WorkspaceResolver,
    /// The optional exports of its current code.
    features: Arc<HandlerFeatures>,
    /// Where its connections' sockets are driven.
    sockets: SocketHome,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The isolate's thread as a place to run sockets: a connection whose reads, handler calls and
/// writes all happen on one thread costs no thread switch per message.
#[derive(Debug, Clone)]
pub struct SocketHome {
    /// The isolate thread's tokio runtime.
    runtime: tokio::runtime::Handle,
    /// The socket tasks, which the thread lets finish (bounded) before it ends.
    tasks: TaskTracker,
    /// The connections driven here; None once the isolate has stopped serving events.
    connections: Arc<Mutex<Option<HashSet<ConnectionId>>>>,
}

impl SocketHome {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            tasks: TaskTracker::new(),
            connections: Arc::new(Mutex::new(Some(HashSet::new()))),
        }
    }

    /// Runs a socket's task on the isolate's thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(self.tasks.track_future(task));
    }

    /// Records a connection driven here, so that it is closed if the isolate stops. False if
    /// the isolate has already stopped.
    pub fn adopt(&self, id: ConnectionId) -> bool {
        self.connections
            .lock()
            .as_mut()
            .is_some_and(|open| open.insert(id))
    }

    /// Forgets a connection that has closed.
    pub fn release(&self, id: ConnectionId) {
        if let Some(open) = self.connections.lock().as_mut() {
            open.remove(&id);
        }
    }

    /// After the isolate stopped serving events: closes (1001, after what is queued) the
    /// connections still open, and refuses new ones.
    fn close_connections(&self, registry: &ConnectionRegistry) {
        let open = self.connections.lock().take().unwrap_or_default();
        for id in open {
            let _ = registry.close(id, 1001, "handler unloaded".into());
        }
    }
}

/// The isolate stopped (its handler was unloaded); the event was not delivered.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the handler's isolate has stopped")]
pub struct IsolateGone;

/// One handler module, as connections and clients see it: events go to whichever isolate runs
/// the module's current code, so a reload swaps the isolate under open connections.
#[derive(Debug)]
pub struct HandlerSlot {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler's path relative to the workspace, as shown in logs.
    pub handler: String,
    current: RwLock<Option<Arc<HandlerIsolate>>>,
}

impl HandlerSlot {
    fn isolate(&self) -> Option<Arc<HandlerIsolate>> {
        self.current.read().clone()
    }

    /// Queues an event for the current isolate, waiting while its queue is full. Fails once the
    /// handler has been unloaded.
    pub async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
        // Most events find room in the queue: no clone of the isolate, no wait.
        let event = {
            let current = self.current.read();
            let isolate = current.as_ref().ok_or(IsolateGone)?;
            match isolate.events.try_send(event) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(IsolateGone),
                Err(mpsc::error::TrySendError::Full(event)) => event,
            }
        };
        let isolate = self.isolate().ok_or(IsolateGone)?;
        isolate.events.send(event).await.map_err(|_| IsolateGone)
    }

    /// Where sockets of this handler are best driven: its isolate's thread, while it runs.
    pub fn socket_home(&self) -> Option<SocketHome> {
        self.isolate().map(|isolate| isolate.sockets.clone())
    }

    /// Whether the handler's current code exports `onUpgrade`.
    pub fn has_on_upgrade(&self) -> bool {
        self.isolate()
            .is_some_and(|isolate| isolate.features.on_upgrade.load(Ordering::SeqCst))
    }

    /// Runs `onStart`/`onTick`/`onStop` for `endpoint` and waits until it has finished. False
    /// if the handler is gone.
    pub async fn service(&self, call: ServiceCall, endpoint: Arc<str>) -> bool {
        let (done, finished) = oneshot::channel();
        if self
            .deliver(IsolateEvent::Service {
                call,
                endpoint,
                done,
            })
            .await
            .is_err()
        {
            return false;
        }
        finished.await.is_ok()
    }

    /// Asks `onUpgrade(request)`; None if the handler is gone or failed to answer.
    pub async fn upgrade(&self, request: String) -> Option<UpgradeDecision> {
        let (decision, answer) = oneshot::channel();
        self.deliver(IsolateEvent::Upgrade { request, decision })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Resolves once the isolate has nothing left to do: no timers, no pending promises.
    pub async fn until_idle(&self) {
        if let Some(isolate) = self.isolate() {
            let mut idle = isolate.idle.clone();
            let _ = idle.wait_for(|idle| *idle).await;
        }
    }

    /// Whether the isolate has nothing pending right now.
    pub fn is_idle(&self) -> bool {
        self.isolate().is_none_or(|isolate| *isolate.idle.borrow())
    }

    /// Module files of the running code that changed on disk since they were loaded.
    pub fn changed_files(&self) -> Vec<PathBuf> {
        self.isolate()
            .map(|isolate| isolate.resolver.changed_files())
            .unwrap_or_default()
    }

    /// Unloads the handler: its isolate finishes the events already queued, then stops.
    fn retire(&self) -> Option<Arc<HandlerIsolate>> {
        self.current.write().take()
    }
}

/// Starts isolates for handler modules and keeps one per module.
#[derive(Debug)]
pub struct IsolateHost {
    resolver: WorkspaceResolver,
    services: Services,
    slots: tokio::sync::Mutex<HashMap<PathBuf, Arc<HandlerSlot>>>,
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
        limits: Arc<Limits>,
        stats: Arc<Stats>,
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
                limits,
                stats,
            },
            slots: Default::default(),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn resolver(&self) -> &WorkspaceResolver {
        &self.resolver
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The handler `handler_file`, its isolate started (module loaded, top level run) if it is
    /// not running yet.
    pub async fn isolate_for(
        &self,
        handler_file: &Path,
    ) -> Result<Arc<HandlerSlot>, HandlerLoadError> {
        let mut slots = self.slots.lock().await;
        if let Some(slot) = slots.get(handler_file) {
            if slot.isolate().is_some() {
                return Ok(slot.clone());
            }
        }
        let isolate = self.start(handler_file).await?;
        let slot = Arc::new(HandlerSlot {
            handler_file: handler_file.to_path_buf(),
            handler: self.resolver.display(handler_file),
            current: RwLock::new(Some(Arc::new(isolate))),
        });
        slots.insert(handler_file.to_path_buf(), slot.clone());
        Ok(slot)
    }

    /// Replaces the code of the handler `handler_file` by the module's current version, in its
    /// running isolate: open connections stay, and their next events run the new code with fresh
    /// module state (timers of the old code are cancelled). If the new code fails to load, the
    /// old code keeps serving and the error is returned. The isolate is kept, not replaced,
    /// because creating an engine context costs memory that the QuickJS engine never gives back.
    pub async fn reload(&self, handler_file: &Path) -> Result<(), HandlerLoadError> {
        let slot = self.slots.lock().await.get(handler_file).cloned();
        let Some(slot) = slot else {
            return self.isolate_for(handler_file).await.map(|_| ());
        };
        let (done, result) = oneshot::channel();
        let gone = || HandlerLoadError(format!("{}: the isolate has stopped", slot.handler));
        slot.deliver(IsolateEvent::Reload { done })
            .await
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    /// Unloads the handler `handler_file`, if it runs.
    pub async fn stop(&self, handler_file: &Path) {
        if let Some(slot) = self.slots.lock().await.remove(handler_file) {
            slot.retire();
        }
    }

    /// The handlers that have a running isolate.
    pub async fn running(&self) -> Vec<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .await
            .values()
            .filter(|slot| slot.isolate().is_some())
            .cloned()
            .collect()
    }

    /// The handler `handler_file` if its isolate runs (it is not started).
    pub async fn running_slot(&self, handler_file: &Path) -> Option<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .await
            .get(handler_file)
            .filter(|slot| slot.isolate().is_some())
            .cloned()
    }

    /// Stops every isolate and waits (up to `limit`) for their threads to finish queued events.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        let slots: Vec<_> = self.slots.lock().await.drain().map(|(_, s)| s).collect();
        let threads: Vec<_> = slots
            .iter()
            .filter_map(|slot| slot.retire())
            .filter_map(|isolate| isolate.thread.lock().take())
            .collect();
        drop(slots);
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
        let resolver = self.resolver.for_new_isolate();
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (ready, started) = oneshot::channel();
        let (idle_sender, idle) = watch::channel(false);
        let features = Arc::new(HandlerFeatures::default());
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                HandlerLoadError(format!(
                    "{handler}: cannot start the isolate's runtime: {error}"
                ))
            })?;
        let sockets = SocketHome::new(tokio.handle().clone());
        let setup = runtime::IsolateSetup {
            sockets: sockets.clone(),
            features: features.clone(),
            handler_file: handler_file.to_path_buf(),
            handler: handler.clone(),
            resolver: resolver.clone(),
            services: self.services.clone(),
            idle: idle_sender,
        };
        let live = self.live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("isolate:{handler}"))
            .spawn(move || {
                // Runs even if the isolate's code panics the thread.
                struct Ended(Arc<AtomicUsize>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _ended = Ended(live);
                runtime::run_isolate_thread(tokio, setup, receiver, ready);
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(error) => {
                return Err(HandlerLoadError(format!(
                    "{handler}: cannot start a thread: {error}"
                )));
            }
        };
        match started.await {
            Ok(Ok(())) => {
                tracing::debug!(handler, "isolate started");
                Ok(HandlerIsolate {
                    events,
                    idle,
                    resolver,
                    features,
                    sockets,
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
