//! One handler module as connections and clients see it: a [`HandlerSlot`] delivers events to
//! whichever isolate runs the module's current code, and remembers why that code failed to load,
//! if it did.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use super::ops::HandlerFeatures;
use crate::event::{
    EventSink, HandlerLoadError, IsolateEvent, IsolateGone, RequestAnswer, ServiceCall,
    UpgradeDecision,
};
use crate::net::home::SocketHome;
use crate::workspace::modules::ModuleFiles;

/// A running handler module: its thread, and the queue its events go into.
#[derive(Debug)]
pub struct HandlerIsolate {
    /// Where its events go.
    pub(super) events: mpsc::Sender<IsolateEvent>,
    /// True while the isolate has no pending timers, promises or events.
    pub(super) idle: watch::Receiver<bool>,
    /// The files its module graph was read from, to tell when it must be reloaded.
    pub(super) modules: ModuleFiles,
    /// The optional exports of its current code.
    pub(super) features: Arc<HandlerFeatures>,
    /// Where its connections' sockets are driven.
    pub(super) sockets: SocketHome,
    /// Its thread, joined at shutdown.
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One handler module: events go to whichever isolate runs the module's current code.
#[derive(Debug)]
pub struct HandlerSlot {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler's path relative to the workspace, as shown in logs.
    pub handler: String,
    /// The isolate running the module; `None` before it starts and once the handler is unloaded.
    pub(super) current: RwLock<Option<Arc<HandlerIsolate>>>,
    /// Why the module's code failed to load, while its last load failed. The isolate is kept
    /// (its code exports nothing); upgrades are refused with this error until a file it read, or
    /// failed to read, changes.
    pub(super) failure: Mutex<Option<HandlerLoadError>>,
    /// Held while the isolate starts or the code reloads: one load at a time per handler, and no
    /// lock that another handler's connections need.
    pub(super) loading: tokio::sync::Mutex<()>,
}

impl EventSink for HandlerSlot {
    /// Queues an event for the current isolate, waiting while its queue is full. Fails once the
    /// handler has been unloaded.
    async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
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
}

impl HandlerSlot {
    /// A slot for `handler_file`, with no isolate yet.
    pub(super) fn new(handler_file: PathBuf, handler: String) -> Self {
        Self {
            handler_file,
            handler,
            current: RwLock::new(None),
            failure: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The isolate running the module's current code.
    pub(super) fn isolate(&self) -> Option<Arc<HandlerIsolate>> {
        self.current.read().clone()
    }

    /// Why the handler's code failed to load, if its last load failed.
    pub fn failure(&self) -> Option<HandlerLoadError> {
        self.failure.lock().clone()
    }

    /// Whether the handler's code is loaded and serving.
    pub fn is_serving(&self) -> bool {
        self.current.read().is_some() && self.failure.lock().is_none()
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

    /// Queues `onMessage(text, from)` for a STOMP session's message to `endpoint` (or, for an
    /// `unreadable` one, `onError(text)`); the answer comes on the returned receiver (which
    /// fails if the handler goes away first).
    pub async fn request(
        &self,
        endpoint: Arc<str>,
        text: String,
        from: String,
        unreadable: bool,
    ) -> Result<oneshot::Receiver<RequestAnswer>, IsolateGone> {
        let (answer, answered) = oneshot::channel();
        self.deliver(IsolateEvent::Request {
            endpoint,
            text,
            from,
            unreadable,
            answer,
        })
        .await?;
        Ok(answered)
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

    /// Files the code depends on (or its last failed load did) that changed since they were read.
    pub fn changed_files(&self) -> Vec<PathBuf> {
        self.isolate()
            .map(|isolate| isolate.modules.changed_files())
            .unwrap_or_default()
    }

    /// Unloads the handler: its isolate finishes the events already queued, then stops.
    pub(super) fn retire(&self) -> Option<Arc<HandlerIsolate>> {
        self.current.write().take()
    }
}
