//! One isolate's thread: building the `JsRuntime`, loading the handler module, and the loop that
//! feeds it events while driving its event loop (timers, promises).

use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use deno_core::{v8, JsRuntime, PollEventLoopOptions, RuntimeOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::modules::{ModuleKind, WorkspaceModuleLoader, WorkspaceResolver};
use super::watchdog::{self, Termination, Watched};
use super::{HandlerFeatures, HandlerLoadError, IsolateEvent, Services, SocketHome, Target};
use crate::api::{switchboard_api, IsolateContext};
use crate::socket::CLOSE_HANDSHAKE_TIMEOUT;
use crate::stats::HandlerFailures;

const BOOTSTRAP_JS: &str = include_str!("../../runtime_js/bootstrap.js");
const WEBSOCKETS_JS: &str = include_str!("../../runtime_js/websockets.js");

/// Events handled per pass before the JS event loop (timers, promise continuations) gets a turn.
const BATCH: usize = 256;

/// What a new isolate thread needs.
pub struct IsolateSetup {
    pub handler_file: PathBuf,
    pub handler: String,
    pub resolver: WorkspaceResolver,
    pub services: Services,
    /// Set while the isolate has nothing pending (for `switchboard run`).
    pub idle: watch::Sender<bool>,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
    /// The sockets driven on this thread.
    pub sockets: SocketHome,
}

/// The body of an isolate's thread. Reports start-up on `ready`, then serves until the event
/// queue's senders are gone.
pub fn run_isolate_thread(
    tokio: tokio::runtime::Runtime,
    setup: IsolateSetup,
    events: mpsc::Receiver<IsolateEvent>,
    ready: oneshot::Sender<Result<(), HandlerLoadError>>,
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
        if let Err(error) = isolate.load_module().await {
            let _ = ready.send(Err(error));
            return;
        }
        if ready.send(Ok(())).is_err() {
            return;
        }
        isolate.serve(events).await;
        tracing::debug!(handler, "isolate stopped");
        sockets.close_connections(&connections);
        sockets.tasks.close();
        // The sockets still open are closing (1001); they get the close handshake's time.
        let closing = CLOSE_HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(1);
        if tokio::time::timeout(closing, sockets.tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!(
                handler,
                "sockets still open when the isolate stopped were dropped"
            );
        }
    });
}

/// A `JsRuntime` with Switchboard's bootstrap and one handler module.
struct HandlerRuntime {
    runtime: JsRuntime,
    handler: String,
    handler_file: PathBuf,
    resolver: WorkspaceResolver,
    services: Services,
    idle: watch::Sender<bool>,
    /// `__switchboard.dispatch`, called for every event.
    dispatch: v8::Global<v8::Function>,
    /// How many times the handler's code was loaded: a reload is a new generation.
    generation: u64,
    /// Events received after a reload request, waiting for the reload to finish.
    pending: std::collections::VecDeque<IsolateEvent>,
    /// The watchdog's view of this isolate, and why it last terminated the handler.
    watched: Arc<Watched>,
    /// Errors and terminations of this handler, for `/metrics`.
    failures: Arc<HandlerFailures>,
    /// Set when the heap ran out: the module is reloaded so that its state is freed.
    reload_for_heap: bool,
    /// `__switchboard.recover`, run after a termination.
    recover: v8::Global<v8::Function>,
}

/// Why the event loop paused.
enum Pause {
    /// The event queue closed: the handler was unloaded.
    Closed,
    /// The code must be reloaded; `done` answers a reload request.
    Reload(Option<oneshot::Sender<Result<(), HandlerLoadError>>>),
}

impl HandlerRuntime {
    fn new(setup: IsolateSetup) -> Result<Self, HandlerLoadError> {
        let limits = setup.services.limits.clone();
        let mut runtime = new_runtime(
            &setup.resolver,
            &setup.handler,
            setup.services.clone(),
            setup.features.clone(),
            Some(limits.isolate_heap),
        );
        let bootstrap_failed =
            |e: String| HandlerLoadError(format!("{}: bootstrap failed: {e}", setup.handler));
        let dispatch = global_function(&mut runtime, "dispatch").map_err(bootstrap_failed)?;
        let recover = global_function(&mut runtime, "recover").map_err(bootstrap_failed)?;
        let watched = watchdog::watch(
            runtime.v8_isolate().thread_safe_handle(),
            limits.event_time,
            limits.isolate_heap,
        );
        let on_heap_limit = watched.clone();
        runtime.add_near_heap_limit_callback(move |current, _initial| {
            // Runs inside the engine's allocator: nothing here may allocate, log or panic.
            on_heap_limit.out_of_heap();
            current.saturating_mul(2)
        });
        let failures = setup.services.stats.handler(&setup.handler);
        Ok(Self {
            runtime,
            handler: setup.handler,
            handler_file: setup.handler_file,
            resolver: setup.resolver,
            services: setup.services,
            idle: setup.idle,
            dispatch,
            generation: 0,
            pending: Default::default(),
            watched,
            failures,
            reload_for_heap: false,
            recover,
        })
    }

    /// Loads (or reloads) the handler module and runs its top level once. On failure the
    /// previous generation's code and module state stay in place.
    async fn load_module(&mut self) -> Result<(), HandlerLoadError> {
        self.generation += 1;
        let generation = self.generation;
        self.resolver.forget_loaded();
        self.call_internal("beginGeneration", generation)?;
        self.watched.begin();
        let mut loaded = self.load_generation(generation).await;
        self.watched.end();
        if let Some(termination) = self.watched.take_termination() {
            self.runtime.v8_isolate().cancel_terminate_execution();
            self.failures
                .terminations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            loaded = Err(HandlerLoadError(format!(
                "{}: its top level was terminated: {termination}",
                self.handler
            )));
        }
        let finish = if loaded.is_ok() {
            "commitGeneration"
        } else {
            "abortGeneration"
        };
        self.call_internal(finish, generation)?;
        self.start_pending_clients();
        loaded
    }

    async fn load_generation(&mut self, generation: u64) -> Result<(), HandlerLoadError> {
        let fail = |error: String| HandlerLoadError(error);
        let source = std::fs::read_to_string(&self.handler_file)
            .map_err(|e| fail(format!("{}: cannot read the handler: {e}", self.handler)))?;
        let mut url = deno_core::ModuleSpecifier::from_file_path(&self.handler_file)
            .map_err(|()| fail(format!("{}: not a valid path", self.handler)))?;
        match ModuleKind::of(&self.handler_file, &source) {
            ModuleKind::EsModule => {
                let id = if generation == 1 {
                    self.runtime.load_main_es_module(&url).await
                } else {
                    url.set_query(Some(&format!("generation={generation}")));
                    self.runtime.load_side_es_module(&url).await
                }
                .map_err(|e| fail(describe_core_error(&e, &self.resolver)))?;
                let mut evaluation = Box::pin(self.runtime.mod_evaluate(id));
                poll_fn(|cx| {
                    if let Poll::Ready(result) = evaluation.as_mut().poll(cx) {
                        return Poll::Ready(result);
                    }
                    let polled = self
                        .runtime
                        .poll_event_loop(cx, PollEventLoopOptions::default());
                    self.start_pending_clients();
                    if let Poll::Ready(Err(error)) = polled {
                        return Poll::Ready(Err(error));
                    }
                    evaluation.as_mut().poll(cx)
                })
                .await
                .map_err(|e| fail(describe_core_error(&e, &self.resolver)))?;
                let namespace = self
                    .runtime
                    .get_module_namespace(id)
                    .map_err(|e| fail(describe_core_error(&e, &self.resolver)))?;
                let set_handler = global_function(&mut self.runtime, "setHandler")
                    .map_err(|e| fail(format!("{}: {e}", self.handler)))?;
                deno_core::scope!(scope, &mut self.runtime);
                let function = v8::Local::new(scope, &set_handler);
                let namespace: v8::Local<v8::Value> = v8::Local::new(scope, &namespace).into();
                let undefined = v8::undefined(scope).into();
                function.call(scope, undefined, &[namespace]);
            }
            ModuleKind::CommonJs | ModuleKind::Json => {
                let script = format!(
                    "globalThis.__switchboard.setHandler(globalThis.__switchboard.requireMain({}));",
                    serde_json::to_string(url.as_str()).unwrap_or_default()
                );
                self.runtime
                    .execute_script("switchboard:load-handler", script)
                    .map_err(|e| fail(describe_js_error(&e, &self.resolver)))?;
            }
        }
        Ok(())
    }

    /// Calls `__switchboard[name](argument)`.
    fn call_internal(&mut self, name: &str, argument: u64) -> Result<(), HandlerLoadError> {
        let script = format!("globalThis.__switchboard.{name}({argument});");
        self.runtime
            .execute_script("switchboard:internal", script)
            .map(|_| ())
            .map_err(|e| HandlerLoadError(format!("{}: {name} failed: {e}", self.handler)))
    }

    /// Feeds events to the handler until the queue closes, driving the JS event loop between.
    /// A reload pauses the events behind it until the new code is in place.
    async fn serve(&mut self, mut events: mpsc::Receiver<IsolateEvent>) {
        loop {
            match self.serve_until_pause(&mut events).await {
                Pause::Closed => return,
                Pause::Reload(done) => {
                    let result = self.load_module().await;
                    match (&result, done.is_some()) {
                        (Err(error), false) => tracing::error!(target: "handler",
                            "{}: reloading after the heap limit failed: {error}", self.handler),
                        (Ok(()), false) => {
                            tracing::warn!(target: "handler",
                                "{}: module reloaded after the heap limit: its state starts afresh", self.handler);
                            release_freed_memory(&mut self.runtime);
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
        poll_fn(|cx| loop {
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
            self.watched.begin();
            let polled = self
                .runtime
                .poll_event_loop(cx, PollEventLoopOptions::default());
            self.watched.end();
            let idle = match polled {
                Poll::Ready(Err(error)) => {
                    match self.watched.take_termination() {
                        Some(termination) => self.terminated(termination, "a timer or promise callback", None),
                        None => tracing::error!(target: "handler", "{}: uncaught error: {}", self.handler,
                            describe_core_error(&error, &self.resolver)),
                    }
                    false
                }
                Poll::Ready(Ok(())) => !received,
                Poll::Pending => false,
            };
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
        })
        .await
    }

    /// After the watchdog or the heap limit stopped the handler's JavaScript: lets the isolate
    /// run again, says why in the log, and tells the handler through `onError` of `target`.
    fn terminated(&mut self, termination: Termination, what: &str, target: Option<Target>) {
        self.runtime.v8_isolate().cancel_terminate_execution();
        self.failures
            .terminations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kept = match termination {
            Termination::TooLong(_) => "its module state is kept",
            Termination::OutOfHeap(_) => {
                self.reload_for_heap = true;
                "its module will be reloaded"
            }
        };
        tracing::error!(target: "handler", "{}: {what} was terminated: {termination}; {kept}", self.handler);
        let message = format!("handler terminated: {termination}");
        deno_core::scope!(scope, &mut self.runtime);
        let recover = v8::Local::new(scope, &self.recover);
        let undefined: v8::Local<v8::Value> = v8::undefined(scope).into();
        let mut args = vec![undefined, undefined, undefined];
        if let Some(target) = target {
            let kind = match target {
                Target::Connection(_) => ERROR,
                Target::Client(_) => ERROR + CLIENT_KINDS,
            };
            args[0] = v8::Number::new(scope, kind).into();
            args[1] = v8::Number::new(scope, target.id() as f64).into();
            args[2] = v8::String::new(scope, &message)
                .map(Into::into)
                .unwrap_or(undefined);
        }
        v8::tc_scope!(let scope, scope);
        if recover.call(scope, undefined, &args).is_none() {
            tracing::error!(target: "handler", "{}: recovering after the termination failed", self.handler);
        }
    }

    fn start_pending_clients(&mut self) {
        crate::api::start_pending_clients(&mut self.runtime.op_state().borrow_mut());
    }

    fn dispatch_batch(&mut self, batch: &mut Vec<IsolateEvent>) {
        let mut replies: Vec<(Target, Message)> = Vec::new();
        let mut terminations: Vec<(Termination, Option<Target>)> = Vec::new();
        let op_state = self.runtime.op_state();
        {
            deno_core::scope!(scope, &mut self.runtime);
            let dispatch = v8::Local::new(scope, &self.dispatch);
            let receiver: v8::Local<v8::Value> = v8::undefined(scope).into();
            // One clock reading per event: an event's end is the next one's start (which then
            // counts the few microseconds of making its arguments).
            let mut clock = std::time::Instant::now();
            for event in batch.drain(..) {
                v8::scope!(let scope, scope);
                // The text of a message event: a reply that is the same text is sent from it,
                // without converting the JS string back (echo and relay handlers).
                let mut received_text = None;
                let (target, args) = match event {
                    IsolateEvent::Upgrade { request, decision } => {
                        let token = crate::api::await_upgrade_decision(
                            &mut op_state.borrow_mut(),
                            decision,
                        );
                        let request: v8::Local<v8::Value> = v8::String::new(scope, &request)
                            .map(Into::into)
                            .unwrap_or(receiver);
                        let args = [
                            v8::Number::new(scope, UPGRADE).into(),
                            v8::Number::new(scope, token as f64).into(),
                            request,
                            receiver,
                            receiver,
                            receiver,
                        ];
                        (None, args)
                    }
                    IsolateEvent::Service {
                        call,
                        endpoint,
                        done,
                    } => {
                        let token =
                            crate::api::await_service_call(&mut op_state.borrow_mut(), done);
                        let name: v8::Local<v8::Value> = v8::String::new(scope, call.export())
                            .map(Into::into)
                            .unwrap_or(receiver);
                        let endpoint: v8::Local<v8::Value> = v8::String::new(scope, &endpoint)
                            .map(Into::into)
                            .unwrap_or(receiver);
                        let args = [
                            v8::Number::new(scope, SERVICE).into(),
                            v8::Number::new(scope, token as f64).into(),
                            name,
                            endpoint,
                            receiver,
                            receiver,
                        ];
                        (None, args)
                    }
                    event => match event_arguments(scope, event) {
                        Some((target, args, text)) => {
                            received_text = text;
                            (Some(target), args)
                        }
                        // Reloads are taken out of the batch before it is dispatched.
                        None => continue,
                    },
                };
                v8::tc_scope!(let scope, scope);
                let started = clock;
                self.watched.begin_at(started);
                let result = dispatch.call(scope, receiver, &args);
                self.watched.end();
                clock = std::time::Instant::now();
                self.services.stats.event_latency.observe(clock - started);
                let terminated = self.watched.take_termination();
                if terminated.is_some() || scope.has_terminated() {
                    scope.cancel_terminate_execution();
                    let termination =
                        terminated.unwrap_or(Termination::TooLong(self.services.limits.event_time));
                    terminations.push((termination, target));
                    continue;
                }
                match (result, target) {
                    (Some(reply), Some(target)) => {
                        // Handle equality: the very string the handler was given (`m => m`),
                        // told without comparing its contents.
                        let echoed =
                            received_text.filter(|_| reply.is_string() && reply == args[2]);
                        if let Some(text) = echoed {
                            replies.push((target, Message::Text(text)));
                        } else if let Some(message) = reply_message(scope, reply) {
                            replies.push((target, message));
                        }
                    }
                    (Some(_), None) => {}
                    (None, _) => {
                        let detail = scope
                            .exception()
                            .map(|e| e.to_rust_string_lossy(scope))
                            .unwrap_or_else(|| "no detail".into());
                        tracing::error!(target: "handler", "{}: event dispatch failed ({target:?}): {detail}",
                            self.handler);
                    }
                }
            }
        }
        for (termination, target) in terminations {
            let what = match target {
                Some(Target::Connection(id)) => format!("an event of connection {id}"),
                Some(Target::Client(id)) => format!("an event of client {id}"),
                None => "onUpgrade, onStart, onTick or onStop".to_string(),
            };
            self.terminated(termination, &what, target);
        }
        for (target, message) in replies {
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
    }
}

/// Event kinds as the dispatcher numbers them; client events add [`CLIENT_KINDS`].
const OPEN: f64 = 0.0;
const MESSAGE: f64 = 1.0;
const ERROR: f64 = 2.0;
const CLOSE: f64 = 3.0;
const CLIENT_KINDS: f64 = 4.0;
const UPGRADE: f64 = 8.0;
const SERVICE: f64 = 9.0;

/// Turns an event into the dispatcher's arguments: `(kind, id, a, b, c, endpoint)`.
fn event_arguments<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    event: IsolateEvent,
) -> Option<(Target, [v8::Local<'s, v8::Value>; 6], Option<Utf8Bytes>)> {
    let undefined: v8::Local<v8::Value> = v8::undefined(scope).into();
    let number = |scope: &mut v8::PinScope<'s, '_>, n: f64| -> v8::Local<'s, v8::Value> {
        v8::Number::new(scope, n).into()
    };
    let string = |scope: &mut v8::PinScope<'s, '_>, s: &str| -> v8::Local<'s, v8::Value> {
        v8::String::new(scope, s)
            .map(Into::into)
            .unwrap_or(undefined)
    };
    let mut endpoint_of_closed = undefined;
    let mut text_received = None;
    let (target, kind, a, b, c) = match event {
        IsolateEvent::Reload { .. }
        | IsolateEvent::Upgrade { .. }
        | IsolateEvent::Service { .. } => return None,
        IsolateEvent::Open {
            target,
            endpoint,
            protocol,
            data,
        } => {
            let detail = endpoint.as_deref().or(protocol.as_deref());
            let a = detail.map(|d| string(scope, d)).unwrap_or(undefined);
            let b = data
                .as_deref()
                .map(|d| string(scope, d))
                .unwrap_or(undefined);
            (target, OPEN, a, b, undefined)
        }
        IsolateEvent::Text { target, text } => {
            let a = string(scope, text.as_str());
            text_received = Some(text);
            (target, MESSAGE, a, undefined, undefined)
        }
        IsolateEvent::Binary { target, data } => {
            let length = data.len();
            let store = v8::ArrayBuffer::new_backing_store_from_vec(Vec::from(data)).make_shared();
            let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
            let bytes = v8::Uint8Array::new(scope, buffer, 0, length)
                .map(Into::into)
                .unwrap_or(undefined);
            (target, MESSAGE, bytes, undefined, undefined)
        }
        IsolateEvent::Error { target, message } => {
            (target, ERROR, string(scope, &message), undefined, undefined)
        }
        IsolateEvent::Close {
            target,
            code,
            reason,
            was_clean,
            endpoint,
        } => {
            if let Some(endpoint) = endpoint {
                endpoint_of_closed = string(scope, &endpoint);
            }
            (
                target,
                CLOSE,
                number(scope, f64::from(code)),
                string(scope, &reason),
                v8::Boolean::new(scope, was_clean).into(),
            )
        }
    };
    let kind = match target {
        Target::Connection(_) => kind,
        Target::Client(_) => kind + CLIENT_KINDS,
    };
    let id = number(scope, target.id() as f64);
    Some((
        target,
        [number(scope, kind), id, a, b, c, endpoint_of_closed],
        text_received,
    ))
}

/// The dispatcher returns a string (text), a Uint8Array (binary) or undefined (no reply).
fn reply_message(scope: &mut v8::PinScope, reply: v8::Local<v8::Value>) -> Option<Message> {
    if reply.is_string() {
        return Some(Message::text(reply.to_rust_string_lossy(scope)));
    }
    if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(reply) {
        let mut bytes = vec![0u8; view.byte_length()];
        view.copy_contents(&mut bytes);
        return Some(Message::binary(bytes));
    }
    None
}

fn new_runtime(
    resolver: &WorkspaceResolver,
    handler: &str,
    services: Services,
    features: Arc<HandlerFeatures>,
    heap_limit: Option<usize>,
) -> JsRuntime {
    let mut runtime = JsRuntime::new(RuntimeOptions {
        create_params: heap_limit.map(|max| v8::CreateParams::default().heap_limits(0, max)),
        module_loader: Some(Rc::new(WorkspaceModuleLoader {
            resolver: resolver.clone(),
        })),
        extensions: vec![switchboard_api::init(IsolateContext {
            handler: handler.to_string(),
            resolver: resolver.clone(),
            services,
            features,
        })],
        ..Default::default()
    });
    for (name, source) in [
        ("switchboard:bootstrap.js", BOOTSTRAP_JS),
        ("switchboard:websockets.js", WEBSOCKETS_JS),
    ] {
        if let Err(error) = runtime.execute_script(name, source) {
            // The bootstrap is ours: a failure here is a bug, reported with the engine's words.
            tracing::error!("{name} failed: {error}");
        }
    }
    runtime
}

/// `globalThis.__switchboard[name]` as a function handle.
fn global_function(
    runtime: &mut JsRuntime,
    name: &str,
) -> Result<v8::Global<v8::Function>, String> {
    let value = runtime
        .execute_script(
            "switchboard:internals",
            format!("globalThis.__switchboard.{name}"),
        )
        .map_err(|e| e.to_string())?;
    deno_core::scope!(scope, runtime);
    let local = v8::Local::new(scope, &value);
    let function = v8::Local::<v8::Function>::try_from(local)
        .map_err(|_| format!("__switchboard.{name} is not a function"))?;
    Ok(v8::Global::new(scope, function))
}

/// `file: line:column: message` for an error in handler code, with paths relative to the workspace.
fn describe_js_error(error: &deno_core::error::JsError, resolver: &WorkspaceResolver) -> String {
    let location = error
        .frames
        .iter()
        .find(|f| {
            f.file_name
                .as_deref()
                .is_some_and(|n| n.starts_with("file:"))
        })
        .map(|frame| {
            let url = frame.file_name.as_deref().unwrap_or_default();
            let line = frame.line_number.unwrap_or(0);
            let mut column = frame.column_number.unwrap_or(0);
            if line == 1 && is_commonjs_url(url) {
                column = (column - COMMONJS_PREFIX.len() as i64).max(1);
            }
            format!("{}:{line}:{column}", relative_url(url, resolver))
        });
    let message = relative_urls_in(&error.exception_message, resolver);
    let message = message
        .strip_prefix("Uncaught ")
        .unwrap_or(&message)
        .to_string();
    match location {
        Some(location) => format!("{location}: {message}"),
        None => message,
    }
}

/// bootstrap.js compiles a CommonJS module inside a function whose head shares the module's
/// first line, so positions on that line are shifted by the head's length.
const COMMONJS_PREFIX: &str = "(function (exports, require, module, __filename, __dirname) {";

fn is_commonjs_url(url: &str) -> bool {
    deno_core::ModuleSpecifier::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .and_then(|path| {
            let source = std::fs::read_to_string(&path).ok()?;
            Some(ModuleKind::of(&path, &source) == ModuleKind::CommonJs)
        })
        .unwrap_or(false)
}

fn describe_core_error(
    error: &deno_core::error::CoreError,
    resolver: &WorkspaceResolver,
) -> String {
    match &*error.0 {
        deno_core::error::CoreErrorKind::Js(js) => describe_js_error(js, resolver),
        _ => relative_urls_in(&error.to_string(), resolver),
    }
}

fn relative_url(url: &str, resolver: &WorkspaceResolver) -> String {
    match deno_core::ModuleSpecifier::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
    {
        Some(path) => resolver.display(&path),
        None => url.to_string(),
    }
}

/// Engine messages name modules by `file://` URL; users know them by workspace path.
fn relative_urls_in(text: &str, resolver: &WorkspaceResolver) -> String {
    match deno_core::ModuleSpecifier::from_directory_path(resolver.root()) {
        Ok(root) => text.replace(root.as_str(), ""),
        Err(()) => text.to_string(),
    }
}

/// Parses a handler (and, for ES modules, everything it imports) without running it.
pub fn check_handler(handler_file: &Path, workspace_root: &Path) -> Result<(), String> {
    super::init_engine();
    let resolver = WorkspaceResolver::new(workspace_root.to_path_buf());
    let handler = resolver.display(handler_file);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    tokio.block_on(async {
        let services = Services {
            connections: Default::default(),
            clients: Default::default(),
            network: tokio::runtime::Handle::current(),
            isolates: std::sync::Weak::new(),
            limits: Default::default(),
            stats: Default::default(),
        };
        let mut runtime = new_runtime(&resolver, &handler, services, Default::default(), None);
        let source =
            std::fs::read_to_string(handler_file).map_err(|e| format!("cannot read: {e}"))?;
        let url = deno_core::ModuleSpecifier::from_file_path(handler_file)
            .map_err(|()| "not a valid path".to_string())?;
        match ModuleKind::of(handler_file, &source) {
            ModuleKind::EsModule => runtime
                .load_side_es_module(&url)
                .await
                .map(|_| ())
                .map_err(|e| describe_core_error(&e, &resolver)),
            ModuleKind::Json => serde_json::from_str::<serde_json::Value>(&source)
                .map(|_| ())
                .map_err(|e| format!("{handler}:{}:{}: {e}", e.line(), e.column())),
            ModuleKind::CommonJs => {
                let script = format!(
                    "globalThis.__switchboard.compileCommonJs({}, {});",
                    serde_json::to_string(&source).unwrap_or_default(),
                    serde_json::to_string(url.as_str()).unwrap_or_default()
                );
                runtime
                    .execute_script("switchboard:check", script)
                    .map(|_| ())
                    .map_err(|e| describe_js_error(&e, &resolver))
            }
        }
    })
}

/// After a handler's heap was freed: collects garbage and gives the memory back to the system.
fn release_freed_memory(runtime: &mut JsRuntime) {
    runtime.v8_isolate().low_memory_notification();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free memory at the allocator's discretion.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_commonjs_prefix_matches_the_bootstrap() {
        assert!(super::BOOTSTRAP_JS.contains(&format!("`{}${{body}}", super::COMMONJS_PREFIX)));
    }
}
