//! One handler module as connections and clients see it: a [`HandlerSlot`] delivers events to
//! the isolates that run the module's current code (one, or the endpoint's `instances`), and
//! remembers why that code failed to load, if it did.
//!
//! With several instances, each inbound connection is given to one instance for its life (the
//! one with the fewest open connections, [`HandlerSlot::assign`]): its events run there and its
//! socket is driven on that instance's thread, so instances use separate cores. Everything else
//! (`onTick`) goes to the first instance; a STOMP session uses one instance for all it sends to a
//! handler, its `onUpgrade` and its link to it, picked by the session's number; an outbound
//! client's events run in the instance that created it when its own module handles it (that
//! instance's module state made it), else in one picked by the client's id;
//! `onStart` and `onStop` run in every instance, since each has its own module state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// What delivering an event returns: ready at once when the instance's queue had room (the
/// usual case), else a boxed wait for room. Every connection's task holds space for this future
/// whether it waits or not, so it is kept to a few words (an `async fn` here made each idle
/// connection ~300 bytes larger; bench: idle memory).
pub type Delivery = futures_util::future::Either<
    std::future::Ready<Result<(), IsolateGone>>,
    futures_util::future::BoxFuture<'static, Result<(), IsolateGone>>,
>;

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
    /// How many inbound connections were given to it and are still open.
    pub(super) assigned: Arc<AtomicUsize>,
    /// How many batches of events it has run.
    pub(super) activity: Arc<AtomicU64>,
}

/// One handler module: events go to whichever isolate runs the module's current code.
#[derive(Debug)]
pub struct HandlerSlot {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler's path relative to the workspace, as shown in logs.
    pub handler: String,
    /// The isolates running the module, one per instance: empty before they start and once the
    /// handler is unloaded.
    pub(super) current: RwLock<Vec<Arc<HandlerIsolate>>>,
    /// Why the module's code failed to load, while its last load failed. The isolate is kept
    /// (its code exports nothing); upgrades are refused with this error until a file it read, or
    /// failed to read, changes.
    pub(super) failure: Mutex<Option<HandlerLoadError>>,
    /// Held while the isolate starts or the code reloads: one load at a time per handler, and no
    /// lock that another handler's connections need.
    pub(super) loading: tokio::sync::Mutex<()>,
}

impl EventSink for HandlerSlot {
    /// Queues an event for the first instance, waiting while its queue is full. Fails once the
    /// handler has been unloaded.
    fn deliver(
        &self,
        event: IsolateEvent,
    ) -> impl std::future::Future<Output = Result<(), IsolateGone>> + Send {
        self.deliver_to(0, event)
    }
}

/// One instance of a handler, given to an inbound connection for its life: the connection's
/// events go to that instance's isolate, and its socket is driven on that isolate's thread.
/// Dropping it (the connection has ended) frees its place in the instance's count.
#[derive(Debug)]
pub struct InstanceSink {
    /// The handler.
    slot: Arc<HandlerSlot>,
    /// Which of its instances.
    index: usize,
    /// The instance's count of connections given to it.
    assigned: Arc<AtomicUsize>,
    /// The instance's thread, where the connection's socket is driven.
    home: SocketHome,
}

impl EventSink for InstanceSink {
    /// Queues an event for the instance, waiting while its queue is full. Fails once the
    /// handler has been unloaded (or the instance removed).
    fn deliver(
        &self,
        event: IsolateEvent,
    ) -> impl std::future::Future<Output = Result<(), IsolateGone>> + Send {
        self.slot.deliver_to(self.index, event)
    }
}

/// The instance of a handler that a number picks (see [`HandlerSlot::deliver_spread`]): an
/// outbound client's events go there, all of them to the same instance.
#[derive(Debug)]
pub struct SpreadSink<'a> {
    /// The handler.
    slot: &'a HandlerSlot,
    /// Picks the instance.
    spread: usize,
}

impl EventSink for SpreadSink<'_> {
    /// Queues an event for the picked instance, waiting while its queue is full. Fails once the
    /// handler has been unloaded.
    fn deliver(
        &self,
        event: IsolateEvent,
    ) -> impl std::future::Future<Output = Result<(), IsolateGone>> + Send {
        self.slot.deliver_spread(self.spread, event)
    }
}

/// Asks `onUpgrade(request)` of the isolate `sink` delivers to.
async fn ask_upgrade(sink: &impl EventSink, request: String) -> Option<UpgradeDecision> {
    let (decision, answer) = oneshot::channel();
    sink.deliver(IsolateEvent::Upgrade { request, decision })
        .await
        .ok()?;
    answer.await.ok()
}

impl Drop for InstanceSink {
    fn drop(&mut self) {
        self.assigned.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InstanceSink {
    /// Where the connection's socket is driven: the instance's thread.
    pub fn socket_home(&self) -> &SocketHome {
        &self.home
    }

    /// Asks the instance's `onUpgrade(request)`; None if the handler is gone or failed to
    /// answer.
    pub async fn upgrade(&self, request: String) -> Option<UpgradeDecision> {
        ask_upgrade(self, request).await
    }
}

impl HandlerSlot {
    /// A slot for `handler_file`, with no isolate yet.
    pub(super) fn new(handler_file: PathBuf, handler: String) -> Self {
        Self {
            handler_file,
            handler,
            current: RwLock::new(Vec::new()),
            failure: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The first isolate running the module's current code.
    pub(super) fn isolate(&self) -> Option<Arc<HandlerIsolate>> {
        self.current.read().first().cloned()
    }

    /// Every isolate running the module, one per instance.
    pub(super) fn instances(&self) -> Vec<Arc<HandlerIsolate>> {
        self.current.read().clone()
    }

    /// How many isolates run the module (0 before it starts).
    pub fn instance_count(&self) -> usize {
        self.current.read().len()
    }

    /// Queues an event for instance `index`, waiting while its queue is full.
    ///
    /// Most events find room in the queue: they are queued before this returns (no clone of the
    /// isolate, no wait, no allocation), and only a full queue's wait is a boxed future.
    fn deliver_to(&self, index: usize, event: IsolateEvent) -> Delivery {
        let current = self.current.read();
        let Some(isolate) = current.get(index) else {
            return Delivery::Left(std::future::ready(Err(IsolateGone)));
        };
        match isolate.events.try_send(event) {
            Ok(()) => Delivery::Left(std::future::ready(Ok(()))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Delivery::Left(std::future::ready(Err(IsolateGone)))
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                let isolate = isolate.clone();
                Delivery::Right(Box::pin(async move {
                    isolate.events.send(event).await.map_err(|_| IsolateGone)
                }))
            }
        }
    }

    /// Queues an event for the instance a STOMP session uses: `spread`, a number per session,
    /// picks one of the instances, the same one for every event of the session.
    pub fn deliver_spread(&self, spread: usize, event: IsolateEvent) -> Delivery {
        let count = self.instance_count().max(1);
        self.deliver_to(spread % count, event)
    }

    /// A sink for the instance that `spread` picks, the same for every event.
    pub fn spread_sink(&self, spread: usize) -> SpreadSink<'_> {
        SpreadSink { slot: self, spread }
    }

    /// Gives a new inbound connection to the instance with the fewest open connections (the
    /// first of those, on a tie). None if the handler is not running.
    pub fn assign(self: &Arc<Self>) -> Option<InstanceSink> {
        let current = self.current.read();
        let (index, isolate) = current
            .iter()
            .enumerate()
            .min_by_key(|(_, isolate)| isolate.assigned.load(Ordering::Relaxed))?;
        isolate.assigned.fetch_add(1, Ordering::Relaxed);
        Some(InstanceSink {
            slot: self.clone(),
            index,
            assigned: isolate.assigned.clone(),
            home: isolate.sockets.clone(),
        })
    }

    /// How many open connections each instance serves, in instance order.
    pub fn assigned_connections(&self) -> Vec<usize> {
        self.current
            .read()
            .iter()
            .map(|isolate| isolate.assigned.load(Ordering::Relaxed))
            .collect()
    }

    /// Why the handler's code failed to load, if its last load failed.
    pub fn failure(&self) -> Option<HandlerLoadError> {
        self.failure.lock().clone()
    }

    /// Whether the handler's code is loaded and serving.
    pub fn is_serving(&self) -> bool {
        !self.current.read().is_empty() && self.failure.lock().is_none()
    }

    /// Where sockets of this handler that are not given to an instance (STOMP sessions) are
    /// best driven: its first isolate's thread, while it runs.
    pub fn socket_home(&self) -> Option<SocketHome> {
        self.isolate().map(|isolate| isolate.sockets.clone())
    }

    /// Whether the handler's current code exports `onUpgrade`.
    pub fn has_on_upgrade(&self) -> bool {
        self.isolate()
            .is_some_and(|isolate| isolate.features.on_upgrade.load(Ordering::SeqCst))
    }

    /// Runs `onStart`/`onTick`/`onStop` for `endpoint` and waits until it has finished. False
    /// if the handler is gone. `onStart` and `onStop` run in every instance (each has its own
    /// module state to set up and release), at once; `onTick`, a periodic service of the
    /// endpoint, in the first only, so that it happens once per interval.
    pub async fn service(&self, call: ServiceCall, endpoint: Arc<str>) -> bool {
        let instances = match call {
            ServiceCall::Tick => 1,
            ServiceCall::Start | ServiceCall::Stop => self.instance_count().max(1),
        };
        let calls = (0..instances).map(|index| {
            let endpoint = endpoint.clone();
            async move {
                let (done, finished) = oneshot::channel();
                let event = IsolateEvent::Service {
                    call,
                    endpoint,
                    done,
                };
                self.deliver_to(index, event).await.is_ok() && finished.await.is_ok()
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .any(|ran| ran)
    }

    /// Asks `onUpgrade(request)` of the instance a STOMP session uses (`spread`, see
    /// [`HandlerSlot::deliver_spread`]), where its messages will run; None if the handler is
    /// gone or failed to answer.
    pub async fn upgrade(&self, spread: usize, request: String) -> Option<UpgradeDecision> {
        ask_upgrade(&self.spread_sink(spread), request).await
    }

    /// Queues `onMessage(text, from)` for a STOMP session's message to `endpoint` (or, for an
    /// `unreadable` one, `onError(text)`), in the instance the session uses (`spread`, see
    /// [`HandlerSlot::deliver_spread`]); the answer comes on the returned receiver (which fails
    /// if the handler goes away first).
    pub async fn request(
        &self,
        spread: usize,
        endpoint: Arc<str>,
        text: String,
        from: String,
        unreadable: bool,
    ) -> Result<oneshot::Receiver<RequestAnswer>, IsolateGone> {
        let (answer, answered) = oneshot::channel();
        self.deliver_spread(
            spread,
            IsolateEvent::Request {
                endpoint,
                text,
                from,
                unreadable,
                answer,
            },
        )
        .await?;
        Ok(answered)
    }

    /// Resolves once every instance has nothing left to do: no timers, no pending promises.
    pub async fn until_idle(&self) {
        for isolate in self.instances() {
            let mut idle = isolate.idle.clone();
            let _ = idle.wait_for(|idle| *idle).await;
        }
    }

    /// Whether every instance has nothing pending right now.
    pub fn is_idle(&self) -> bool {
        self.instances()
            .iter()
            .all(|isolate| *isolate.idle.borrow())
    }

    /// Files the code depends on (or its last failed load did) that changed since they were
    /// read (every instance reads the same files; the first one's record is asked).
    pub fn changed_files(&self) -> Vec<PathBuf> {
        self.isolate()
            .map(|isolate| isolate.modules.changed_files())
            .unwrap_or_default()
    }

    /// How many batches of events its instances have run: unchanged between two looks, and
    /// nothing was delivered in between.
    pub fn activity(&self) -> u64 {
        self.current
            .read()
            .iter()
            .map(|isolate| isolate.activity.load(Ordering::Relaxed))
            .sum()
    }

    /// Unloads the handler if no connection is given to any instance and none has anything
    /// pending; checked and done under the lock [`HandlerSlot::assign`] takes, so that no
    /// connection is given to an instance being unloaded. True if it was unloaded.
    pub(super) fn retire_if_unused(&self) -> bool {
        // A handler whose code failed to load stays, with its error, until a fix reloads it.
        if self.failure.lock().is_some() {
            return false;
        }
        let mut current = self.current.write();
        let unused = !current.is_empty()
            && current.iter().all(|isolate| {
                isolate.assigned.load(Ordering::Relaxed) == 0 && *isolate.idle.borrow()
            });
        if unused {
            current.clear();
        }
        unused
    }

    /// Unloads the handler: its isolates finish the events already queued, then stop.
    pub(super) fn retire(&self) -> Vec<Arc<HandlerIsolate>> {
        std::mem::take(&mut *self.current.write())
    }
}
