//! One isolate's thread: the `JsRuntime` of one handler module, and the loop that feeds it events
//! while driving its event loop (timers, promises). Each pass drains every waiting event (up to
//! [`BATCH`]), dispatches them (`dispatch`), sends the replies, then gives the event loop a turn.
//! A reload travels in the event queue and pauses the events behind it until the new code is in
//! place (`load`).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use deno_core::JsRuntime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::dispatch::{Dispatcher, Watch};
use super::engine::{
    call, new_runtime, poll_event_loop, release_freed_memory, Arg, GenerationStep, Internals,
    RuntimeParts,
};
use super::error_text;
use super::load::{evaluate, HandlerModule};
use super::ops::{start_pending_clients, HandlerFeatures, Services};
use super::watchdog::{self, Termination, Watched};
use crate::event::{HandlerLoadError, IsolateEvent, Target};
use crate::net::home::SocketHome;
use crate::net::pump::CLOSE_HANDSHAKE_TIMEOUT;
use crate::stats::HandlerFailures;
use crate::workspace::modules::ModuleFiles;

/// Events handled per pass before the JS event loop (timers, promise continuations) gets a turn.
const BATCH: usize = 256;

/// The most a handler's heap may reach once it hit its limit `limit` and is being terminated:
/// an eighth more (the engine adds its own eighth of headroom on top before it fails an
/// allocation; README "Limits").
fn heap_ceiling(limit: usize) -> usize {
    limit.saturating_add(limit / 8)
}

/// Watches the runtime's heap: near `limit`, the handler is terminated, and the limit is raised
/// once, to [`heap_ceiling`], so that the termination can unwind (the engine would otherwise fail
/// the allocations it makes on the way); what the handler allocates beyond fails instead.
fn install_heap_limit(runtime: &mut JsRuntime, watched: &Arc<Watched>, limit: usize) {
    let watched = watched.clone();
    let ceiling = heap_ceiling(limit);
    runtime.add_near_heap_limit_callback(move |current, _initial| {
        // Runs inside the engine's allocator: nothing here may allocate, log or panic.
        watched.out_of_heap();
        current.max(ceiling)
    });
}

/// What a new isolate thread needs.
pub struct IsolateSetup {
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler, as shown in logs.
    pub handler: String,
    /// Which of the handler's instances this isolate is (0 for the first).
    pub instance: usize,
    /// The workspace's module files, recording what this isolate reads.
    pub modules: ModuleFiles,
    /// What the ops reach.
    pub services: Services,
    /// Set while the isolate has nothing pending (for `switchboard run`).
    pub idle: watch::Sender<bool>,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
    /// The sockets driven on this thread.
    pub sockets: SocketHome,
    /// Counts the batches of events the isolate has run (to tell an unused handler).
    pub activity: Arc<AtomicU64>,
}

/// How an isolate's start went, once its thread runs.
pub enum Started {
    /// The handler's code loaded.
    Loaded,
    /// The isolate runs, but the handler's code failed to load: it serves nothing until a reload
    /// succeeds (the isolate is kept, since a new engine context costs memory the QuickJS engine
    /// never gives back).
    CodeFailed(HandlerLoadError),
}

/// The body of an isolate's thread. Reports start-up on `ready` (an error only if the isolate
/// itself could not be made), then serves until the event queue's senders are gone; then closes
/// the sockets driven here, giving them the close handshake's time.
pub fn run_isolate_thread(
    tokio: tokio::runtime::Runtime,
    setup: IsolateSetup,
    events: mpsc::Receiver<IsolateEvent>,
    ready: oneshot::Sender<Result<Started, HandlerLoadError>>,
) {
    let sockets = setup.sockets.clone();
    let connections = setup.services.connections.clone();
    tokio.block_on(async move {
        let handler = setup.handler.clone();
        let mut isolate = match HandlerRuntime::new(setup) {
            Ok(isolate) => isolate,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let started = match isolate.load_module().await {
            Ok(()) => Started::Loaded,
            Err(error) => Started::CodeFailed(error),
        };
        if ready.send(Ok(started)).is_err() {
            return;
        }
        // Loading went deeper than serving goes (the engine's parser and compiler recurse): the
        // stack pages only the load touched are given back (about 16 KB an isolate).
        crate::memory::release_unused_stack();
        isolate.serve(events).await;
        tracing::debug!(handler, "isolate stopped");
        // The sockets still open are closing (1001); they get the close handshake's time.
        let grace = CLOSE_HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(1);
        if !sockets.close(&connections, grace).await {
            tracing::debug!(
                handler,
                "sockets still open when the isolate stopped were dropped"
            );
        }
    });
}

/// A `JsRuntime` running one handler module, and what it needs to serve its events.
struct HandlerRuntime {
    /// The engine, with the runtime's JavaScript and the handler's code.
    runtime: JsRuntime,
    /// The handler, as shown in logs.
    handler: String,
    /// The handler module's canonical file.
    handler_file: PathBuf,
    /// The module files its code was read from.
    modules: ModuleFiles,
    /// Connections and clients (replies go there), limits and counters.
    services: Services,
    /// Set while nothing is pending.
    idle: watch::Sender<bool>,
    /// The JavaScript entry points for events.
    dispatcher: Dispatcher,
    /// The runtime's other entry points (loading, reload steps).
    internals: Internals,
    /// How many times the handler's code was loaded: a reload is a new generation.
    generation: u64,
    /// Events received after a reload request, waiting for the reload to finish.
    pending: VecDeque<IsolateEvent>,
    /// The watchdog's view of this isolate, and why it last terminated the handler.
    watched: Arc<Watched>,
    /// Errors, terminations and event durations of this handler, for `/metrics` and the console.
    failures: Arc<HandlerFailures>,
    /// Set when the heap ran out: the module is reloaded so that its state is freed.
    reload_for_heap: bool,
    /// The heap limit, in bytes.
    heap_limit: usize,
    /// Counts the batches of events run.
    activity: Arc<AtomicU64>,
}

/// Why the event loop paused.
enum Pause {
    /// The event queue closed: the handler was unloaded.
    Closed,
    /// The code must be reloaded; `done` answers a reload request (none after the heap limit).
    Reload(Option<oneshot::Sender<Result<(), HandlerLoadError>>>),
}

impl HandlerRuntime {
    fn new(setup: IsolateSetup) -> Result<Self, HandlerLoadError> {
        let limits = setup.services.limits.clone();
        let (mut runtime, internals) = new_runtime(RuntimeParts {
            handler: setup.handler.clone(),
            instance: setup.instance,
            modules: setup.modules.clone(),
            services: setup.services.clone(),
            features: setup.features.clone(),
            heap_limit: Some(limits.isolate_heap),
        })
        .map_err(|reason| HandlerLoadError::Isolate {
            file: setup.handler.clone(),
            what: "bootstrap failed",
            reason,
        })?;
        let dispatcher = Dispatcher::new(&internals);
        let watched = watchdog::watch(
            runtime.v8_isolate().thread_safe_handle(),
            limits.event_time,
            limits.isolate_heap,
        );
        install_heap_limit(&mut runtime, &watched, limits.isolate_heap);
        let failures = setup.services.stats.handler(&setup.handler);
        Ok(Self {
            runtime,
            handler: setup.handler,
            handler_file: setup.handler_file,
            modules: setup.modules,
            services: setup.services,
            idle: setup.idle,
            dispatcher,
            internals,
            generation: 0,
            pending: Default::default(),
            watched,
            failures,
            reload_for_heap: false,
            heap_limit: limits.isolate_heap,
            activity: setup.activity,
        })
    }

    /// Loads (or reloads) the handler module and runs its top level once. On failure the
    /// previous generation's code and module state stay in place.
    async fn load_module(&mut self) -> Result<(), HandlerLoadError> {
        self.generation += 1;
        let generation = self.generation;
        self.modules.begin_load();
        self.generation_step(GenerationStep::Begin, generation)?;
        self.watched.begin();
        let module = HandlerModule {
            handler: &self.handler,
            file: &self.handler_file,
            modules: &self.modules,
        };
        let mut loaded = evaluate(&mut self.runtime, &self.internals, &module, generation).await;
        self.watched.end();
        let termination = self.watched.take_termination();
        if let Some(termination) = termination {
            self.runtime.v8_isolate().cancel_terminate_execution();
            self.failures.terminations.fetch_add(1, Ordering::Relaxed);
            if let Termination::OutOfHeap(_) = termination {
                self.open_heap_for_cleanup();
            }
            loaded = Err(HandlerLoadError::Terminated {
                file: self.handler.clone(),
                reason: termination.to_string(),
            });
        }
        let finish = if loaded.is_ok() {
            self.modules.load_succeeded();
            GenerationStep::Commit
        } else {
            self.modules.load_failed();
            GenerationStep::Abort
        };
        let stepped = self.generation_step(finish, generation);
        if let Some(Termination::OutOfHeap(_)) = termination {
            release_freed_memory(&mut self.runtime);
            self.close_heap_after_cleanup();
        }
        stepped?;
        self.start_pending_clients();
        loaded
    }

    /// After the heap limit stopped the handler: the termination left no room to run any
    /// JavaScript (not even the recovery, or dropping the old state), so the heap may grow to
    /// twice its limit until [`Self::close_heap_after_cleanup`].
    fn open_heap_for_cleanup(&mut self) {
        self.runtime
            .remove_near_heap_limit_callback(self.heap_limit.saturating_mul(2));
    }

    /// The old state is dropped and collected: the heap limit is back where it was.
    fn close_heap_after_cleanup(&mut self) {
        // Removing the callback with a limit is how the engine's API sets the limit back; the
        // callback is then installed again.
        install_heap_limit(&mut self.runtime, &self.watched, self.heap_limit);
        self.runtime
            .remove_near_heap_limit_callback(self.heap_limit);
        install_heap_limit(&mut self.runtime, &self.watched, self.heap_limit);
    }

    /// Runs one of the runtime's reload steps for `generation`.
    fn generation_step(
        &mut self,
        step: GenerationStep,
        generation: u64,
    ) -> Result<(), HandlerLoadError> {
        let function = self.internals.generation_step(step);
        call(
            &mut self.runtime,
            function,
            &[Arg::Number(generation as f64)],
        )
        .map(|_| ())
        .map_err(|error| HandlerLoadError::Isolate {
            file: self.handler.clone(),
            what: "a reload step failed",
            reason: format!("{step:?}: {error}"),
        })
    }

    /// Feeds events to the handler until the queue closes, driving the JS event loop between.
    /// A reload pauses the events behind it until the new code is in place.
    async fn serve(&mut self, mut events: mpsc::Receiver<IsolateEvent>) {
        loop {
            match self.serve_until_pause(&mut events).await {
                Pause::Closed => return,
                Pause::Reload(done) => {
                    if done.is_none() {
                        // After the heap limit: the old code's state goes first (its memory is
                        // what the new code needs), so the reload starts afresh.
                        if let Err(error) = self.generation_step(GenerationStep::Discard, 0) {
                            tracing::error!(target: "handler", "{}: {error}", self.handler);
                        }
                        release_freed_memory(&mut self.runtime);
                        self.close_heap_after_cleanup();
                    }
                    let result = self.load_module().await;
                    match (&result, done.is_some()) {
                        (Err(error), false) => tracing::error!(target: "handler",
                            "{}: reloading after the heap limit failed: {error}", self.handler),
                        (Ok(()), false) => {
                            tracing::warn!(target: "handler",
                                "{}: module reloaded after the heap limit: its state starts afresh", self.handler);
                        }
                        (Err(error), true) => {
                            tracing::debug!(handler = %self.handler, "reload failed: {error}")
                        }
                        (Ok(()), true) => {}
                    }
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
            }
        }
    }

    /// Serves events until the queue closes or a reload is due.
    async fn serve_until_pause(&mut self, events: &mut mpsc::Receiver<IsolateEvent>) -> Pause {
        let mut batch = Vec::with_capacity(BATCH);
        // What the event loop said when it was last polled in this wake-up (finished or not):
        // with no event run since, polling it again would find the same (anything that could
        // change that wakes the task, and the loop is polled at the next wake-up), so the poll
        // after a wake-up's last batch, about 3,600 instructions, is not repeated only to find
        // the queue empty.
        poll_fn(|cx| {
            let mut last_turn: Option<bool> = None;
            loop {
                if !self.pending.is_empty() {
                    batch.extend(self.pending.drain(..));
                }
                let received = if !batch.is_empty() {
                    true
                } else {
                    match events.poll_recv_many(cx, &mut batch, BATCH) {
                        Poll::Ready(0) => return Poll::Ready(Pause::Closed),
                        Poll::Ready(_) => true,
                        Poll::Pending => false,
                    }
                };
                let mut reload = None;
                if received {
                    self.activity.fetch_add(1, Ordering::Relaxed);
                    if let Some(at) = batch
                        .iter()
                        .position(|e| matches!(e, IsolateEvent::Reload { .. }))
                    {
                        self.pending.extend(batch.drain(at + 1..));
                        if let Some(IsolateEvent::Reload { done }) = batch.pop() {
                            reload = Some(done);
                        }
                    }
                    self.dispatch_batch(&mut batch);
                }
                if self.reload_for_heap && reload.is_none() {
                    // The old code runs nothing more (no timer, no promise callback) before the
                    // reload frees its state.
                    self.reload_for_heap = false;
                    return Poll::Ready(Pause::Reload(None));
                }
                last_turn = match last_turn {
                    Some(finished) if !received => Some(finished),
                    _ => self.turn_event_loop(cx),
                };
                let idle = last_turn == Some(true) && !received;
                self.start_pending_clients();
                self.idle
                    .send_if_modified(|was| std::mem::replace(was, idle) != idle);
                if reload.is_some() {
                    return Poll::Ready(Pause::Reload(reload));
                }
                if std::mem::take(&mut self.reload_for_heap) {
                    return Poll::Ready(Pause::Reload(None));
                }
                if !received {
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// One turn of the event loop (timers, promise callbacks, ops), watched: whether it has
    /// nothing left to run; `None` after an error (reported here), when it is polled again at
    /// the next turn, as it may not have asked to be woken.
    fn turn_event_loop(&mut self, cx: &mut std::task::Context<'_>) -> Option<bool> {
        self.watched.begin();
        let polled = poll_event_loop(&mut self.runtime, cx);
        self.watched.end();
        match polled {
            Poll::Ready(Ok(())) => Some(true),
            Poll::Pending => Some(false),
            Poll::Ready(Err(error)) => {
                match self.watched.take_termination() {
                    Some(termination) => {
                        self.terminated(termination, "a timer or promise callback", None)
                    }
                    None => tracing::error!(target: "handler", "{}: uncaught error: {}",
                        self.handler, error_text::describe(&error, &self.modules)),
                }
                None
            }
        }
    }

    /// Runs a batch of events, then deals with what it left: terminated events first (their
    /// `onError`), then the replies, in order.
    fn dispatch_batch(&mut self, batch: &mut Vec<IsolateEvent>) {
        let done = self.dispatcher.run(
            &mut self.runtime,
            batch,
            Watch {
                watched: &self.watched,
                latency: [&self.services.stats.event_latency, &self.failures.latency],
                event_time: self.services.limits.event_time,
                handler: &self.handler,
            },
        );
        for (termination, target) in done.terminations {
            let what = match target {
                Some(Target::Connection(id)) => format!("an event of connection {id}"),
                Some(Target::Client(id)) => format!("an event of client {id}"),
                None => "onUpgrade, onStart, onTick or onStop".to_string(),
            };
            self.terminated(termination, &what, target);
        }
        for (target, message) in done.replies {
            self.reply(target, message);
        }
        // Events the dispatcher did not reach (it stops at the heap limit) run after the reload,
        // before anything received later.
        for event in batch.drain(..).rev() {
            self.pending.push_front(event);
        }
    }

    /// Sends a handler's reply to the connection or client whose event it answered.
    fn reply(&self, target: Target, message: Message) {
        let sent = match target {
            Target::Connection(id) => self
                .services
                .connections
                .send(id, message)
                .map_err(|e| e.to_string()),
            Target::Client(id) => self
                .services
                .clients
                .send(id, message)
                .map_err(|e| e.to_string()),
        };
        if let Err(error) = sent {
            tracing::debug!(handler = %self.handler, "reply not sent: {error}");
        }
    }

    /// After the watchdog or the heap limit stopped the handler's JavaScript: lets the isolate
    /// run again, says why in the log, and tells the handler through `onError` of `target`.
    fn terminated(&mut self, termination: Termination, what: &str, target: Option<Target>) {
        self.runtime.v8_isolate().cancel_terminate_execution();
        self.failures.terminations.fetch_add(1, Ordering::Relaxed);
        let kept = match termination {
            Termination::TooLong(_) => "its module state is kept",
            Termination::OutOfHeap(_) => {
                self.reload_for_heap = true;
                self.open_heap_for_cleanup();
                "its module will be reloaded"
            }
        };
        tracing::error!(target: "handler", "{}: {what} was terminated: {termination}; {kept}", self.handler);
        let message = format!("handler terminated: {termination}");
        if !self.dispatcher.recover(&mut self.runtime, target, &message) {
            tracing::error!(target: "handler", "{}: recovering after the termination failed", self.handler);
        }
    }

    /// Starts the clients the handler's last turn of JavaScript created.
    fn start_pending_clients(&mut self) {
        start_pending_clients(&mut self.runtime.op_state().borrow_mut());
    }
}
