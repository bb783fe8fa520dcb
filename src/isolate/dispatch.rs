//! Pushing events into JavaScript: every event of a batch becomes one direct call of the
//! runtime's dispatcher (`runtime_js/06_dispatch.js`: `dispatchMessage(id, message)` for a
//! message on an inbound connection, `dispatch(kind, id, a, b, c, endpoint)` for every other
//! event), whose return value is the reply. A direct call costs far less than an awaited op on this
//! engine (measured on QuickJS: ~0.6 µs a call against ~4.7 µs an awaited op).

use std::time::{Duration, Instant};

use deno_core::{v8, JsRuntime};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::engine::Internals;
use super::ops::{await_request, await_service_call, await_upgrade_decision, fail_request};
use super::watchdog::{Termination, Watched};
use crate::event::{EventKind, IsolateEvent, Target};
use crate::stats::LatencyHistogram;

/// The runtime's entry points for events, as function handles.
pub struct Dispatcher {
    /// `dispatch`, called for every event but inbound connections' messages.
    dispatch: v8::Global<v8::Function>,
    /// `dispatchMessage`, called for every message on an inbound connection (two arguments
    /// rather than six, and the interpreter's shortest path: bench/README.md).
    dispatch_message: v8::Global<v8::Function>,
    /// `recover`, called after a termination.
    recover: v8::Global<v8::Function>,
}

/// What a batch of events left to do.
#[derive(Default)]
pub struct Dispatched {
    /// Replies (handlers' return values) to send, in order.
    pub replies: Vec<(Target, Message)>,
    /// Events the watchdog or the heap limit stopped, with whose event it was (none for
    /// `onUpgrade` and the lifecycle calls).
    pub terminations: Vec<(Termination, Option<Target>)>,
}

/// What the dispatcher needs to watch and measure the events it runs.
pub struct Watch<'a> {
    /// The watchdog's view of the isolate.
    pub watched: &'a Watched,
    /// Where each event's duration is counted: all handlers together, and this one.
    pub latency: [&'a LatencyHistogram; 2],
    /// The time limit per event (for a termination the watchdog did not record).
    pub event_time: Duration,
    /// The handler, for the log.
    pub handler: &'a str,
}

impl Dispatcher {
    /// The dispatcher of the runtime whose entry points are `internals`.
    pub fn new(internals: &Internals) -> Self {
        Self {
            dispatch: internals.dispatch.clone(),
            dispatch_message: internals.dispatch_message.clone(),
            recover: internals.recover.clone(),
        }
    }

    /// Runs the events of `batch`, in order; those left in `batch` were not run (the heap limit
    /// stopped the handler before them).
    pub fn run(
        &self,
        runtime: &mut JsRuntime,
        batch: &mut Vec<IsolateEvent>,
        watch: Watch<'_>,
    ) -> Dispatched {
        let mut done = Dispatched {
            replies: Vec::with_capacity(batch.len()),
            terminations: Vec::new(),
        };
        let op_state = runtime.op_state();
        deno_core::scope!(scope, runtime);
        let dispatch = v8::Local::new(scope, &self.dispatch);
        let dispatch_message = v8::Local::new(scope, &self.dispatch_message);
        let receiver: v8::Local<v8::Value> = v8::undefined(scope).into();
        // One clock reading per event: an event's end is the next one's start (which then
        // counts the few microseconds of making its arguments).
        let mut clock = Instant::now();
        // Drained rather than taken: the batch keeps its allocation for the next one (taking it
        // made the queue's receiver grow a new vector for every batch).
        let mut taken = std::mem::take(batch);
        let mut events = taken.drain(..);
        for event in events.by_ref() {
            v8::scope!(let scope, scope);
            // The text of a message event: a reply that is the same text is sent from it,
            // without converting the JS string back (echo and relay handlers).
            let mut received_text = None;
            // A STOMP message's answer token: a terminated event is answered here.
            let mut request_token = None;
            // Whether the event goes to `dispatchMessage(id, message)` (its first two arguments)
            // rather than `dispatch`.
            let mut inbound_message = false;
            let (target, args) = match event {
                IsolateEvent::Text {
                    target: target @ Target::Connection(id),
                    text,
                } => {
                    inbound_message = true;
                    let message = string(scope, text.as_str());
                    received_text = Some(text);
                    let id = number(scope, id as f64);
                    (
                        Some(target),
                        [id, message, receiver, receiver, receiver, receiver],
                    )
                }
                IsolateEvent::Binary {
                    target: target @ Target::Connection(id),
                    data,
                } => {
                    inbound_message = true;
                    let message = uint8_array(scope, data);
                    let id = number(scope, id as f64);
                    (
                        Some(target),
                        [id, message, receiver, receiver, receiver, receiver],
                    )
                }
                IsolateEvent::Request {
                    endpoint,
                    text,
                    from,
                    unreadable,
                    answer,
                } => {
                    let token = await_request(&mut op_state.borrow_mut(), answer);
                    request_token = Some(token);
                    let args = [
                        number(scope, EventKind::Request.number()),
                        number(scope, token as f64),
                        string(scope, &text),
                        string(scope, &from),
                        v8::Boolean::new(scope, unreadable).into(),
                        string(scope, &endpoint),
                    ];
                    (None, args)
                }
                IsolateEvent::Upgrade { request, decision } => {
                    let token = await_upgrade_decision(&mut op_state.borrow_mut(), decision);
                    let request = string(scope, &request);
                    let args = [
                        number(scope, EventKind::Upgrade.number()),
                        number(scope, token as f64),
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
                    let token = await_service_call(&mut op_state.borrow_mut(), done);
                    let args = [
                        number(scope, EventKind::Service.number()),
                        number(scope, token as f64),
                        string(scope, call.export()),
                        string(scope, &endpoint),
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
            watch.watched.begin_at(started);
            let (function, arguments, message) = if inbound_message {
                (dispatch_message, &args[..2], args[1])
            } else {
                (dispatch, &args[..], args[2])
            };
            let result = function.call(scope, receiver, arguments);
            watch.watched.end_event();
            clock = Instant::now();
            let elapsed = clock - started;
            for latency in watch.latency {
                latency.observe(elapsed);
            }
            let terminated = watch.watched.take_termination();
            if terminated.is_some() || scope.has_terminated() {
                scope.cancel_terminate_execution();
                let termination = terminated.unwrap_or(Termination::TooLong(watch.event_time));
                if let Some(token) = request_token {
                    let error = format!("handler terminated: {termination}");
                    fail_request(&mut op_state.borrow_mut(), token, error);
                }
                done.terminations.push((termination, target));
                if let Termination::OutOfHeap(_) = termination {
                    // The handler's code is about to be replaced: the events after this one
                    // wait for the new code (they are left in `batch`).
                    break;
                }
                continue;
            }
            match (result, target) {
                (Some(reply), Some(target)) => {
                    // The very string the handler was given (`m => m`), or one equal to it: the
                    // received text goes out as it is, without reading the JS string back.
                    // `strict_equals`, not `==` (SameValueZero, which compares both sides with
                    // zero too when they differ: on QuickJS a walk over every live handle).
                    let echoed =
                        received_text.filter(|_| reply.is_string() && reply.strict_equals(message));
                    if let Some(text) = echoed {
                        done.replies.push((target, Message::Text(text)));
                    } else if let Some(message) = reply_message(scope, reply) {
                        done.replies.push((target, message));
                    }
                }
                (Some(_), None) => {}
                (None, _) => {
                    let detail = scope
                        .exception()
                        .map(|e| e.to_rust_string_lossy(scope))
                        .unwrap_or_else(|| "no detail".into());
                    tracing::error!(target: "handler", "{}: event dispatch failed ({target:?}): {detail}",
                        watch.handler);
                }
            }
        }
        watch.watched.end();
        let left: Vec<IsolateEvent> = events.collect();
        *batch = taken;
        batch.extend(left);
        done
    }

    /// After a termination: lets the runtime's JavaScript recover (`recover`),
    /// and, for a socket's event, tells its `onError` `message`. False if that failed.
    pub fn recover(&self, runtime: &mut JsRuntime, target: Option<Target>, message: &str) -> bool {
        deno_core::scope!(scope, runtime);
        let recover = v8::Local::new(scope, &self.recover);
        let undefined: v8::Local<v8::Value> = v8::undefined(scope).into();
        let mut args = vec![undefined, undefined, undefined];
        if let Some(target) = target {
            args[0] = number(scope, EventKind::Error.for_target(target).number());
            args[1] = number(scope, target.id() as f64);
            args[2] = string(scope, message);
        }
        v8::tc_scope!(let scope, scope);
        recover.call(scope, undefined, &args).is_some()
    }
}

/// A JS number.
fn number<'s>(scope: &mut v8::PinScope<'s, '_>, n: f64) -> v8::Local<'s, v8::Value> {
    v8::Number::new(scope, n).into()
}

/// A JS string (`undefined` if the engine cannot make it).
fn string<'s>(scope: &mut v8::PinScope<'s, '_>, s: &str) -> v8::Local<'s, v8::Value> {
    match v8::String::new(scope, s) {
        Some(string) => string.into(),
        None => v8::undefined(scope).into(),
    }
}

/// A binary message as a JS Uint8Array (`undefined` if the engine cannot make it).
fn uint8_array<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    data: bytes::Bytes,
) -> v8::Local<'s, v8::Value> {
    let length = data.len();
    let store = v8::ArrayBuffer::new_backing_store_from_vec(Vec::from(data)).make_shared();
    let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
    match v8::Uint8Array::new(scope, buffer, 0, length) {
        Some(bytes) => bytes.into(),
        None => v8::undefined(scope).into(),
    }
}

/// Turns a socket event into the dispatcher's arguments: `(kind, id, a, b, c, endpoint)`, and
/// the received text of a text message.
fn event_arguments<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    event: IsolateEvent,
) -> Option<(Target, [v8::Local<'s, v8::Value>; 6], Option<Utf8Bytes>)> {
    let undefined: v8::Local<v8::Value> = v8::undefined(scope).into();
    let mut endpoint_of_closed = undefined;
    let mut text_received = None;
    let (target, kind, a, b, c) = match event {
        IsolateEvent::Reload { .. }
        | IsolateEvent::Upgrade { .. }
        | IsolateEvent::Service { .. }
        | IsolateEvent::Request { .. } => return None,
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
            (target, EventKind::Open, a, b, undefined)
        }
        IsolateEvent::Text { target, text } => {
            let a = string(scope, text.as_str());
            text_received = Some(text);
            (target, EventKind::Message, a, undefined, undefined)
        }
        IsolateEvent::Binary { target, data } => (
            target,
            EventKind::Message,
            uint8_array(scope, data),
            undefined,
            undefined,
        ),
        IsolateEvent::Error { target, message } => (
            target,
            EventKind::Error,
            string(scope, &message),
            undefined,
            undefined,
        ),
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
                EventKind::Close,
                number(scope, f64::from(code)),
                string(scope, &reason),
                v8::Boolean::new(scope, was_clean).into(),
            )
        }
    };
    let kind = number(scope, kind.for_target(target).number());
    let id = number(scope, target.id() as f64);
    Some((
        target,
        [kind, id, a, b, c, endpoint_of_closed],
        text_received,
    ))
}

/// The dispatcher returns a string (text), a Uint8Array (binary) or undefined (no reply).
fn reply_message(scope: &mut v8::PinScope, reply: v8::Local<v8::Value>) -> Option<Message> {
    if let Ok(text) = v8::Local::<v8::String>::try_from(reply) {
        // Read as the string it is: `Value::to_rust_string_lossy` would convert it with
        // `ToString` first (about 3 % of the server's instructions per message on QuickJS).
        return Some(Message::text(text.to_rust_string_lossy(scope)));
    }
    if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(reply) {
        // One engine call for where the bytes are and how many (V8 copies a small view's bytes,
        // which live in its heap, into `storage`); then one copy into the message.
        let mut storage = [0u8; v8::TYPED_ARRAY_MAX_SIZE_IN_HEAP];
        let bytes = view.get_contents(&mut storage);
        return Some(Message::binary(bytes::Bytes::copy_from_slice(bytes)));
    }
    None
}
