//! One STOMP session, as Dirigible's broker serves it: CONNECT, then SENDs to
//! `/ws/stomp/{endpoint}` run the endpoint's `onMessage(text, from)` and come back on the
//! sender's `/user/queue/reply/{endpoint}`; SUBSCRIBE and SEND on `/topic/...` and `/queue/...`
//! go through the broker; DISCONNECT with a receipt is answered. A frame that cannot be read
//! gets an ERROR and the socket closes; the server and every other session go on.
//!
//! The socket is driven by the same pump as any connection (`net/pump`): the session is the
//! [`EventSink`] its messages are delivered to, and it writes through its [`Outlet`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::super::state::AppState;
use super::broker::{is_broker_destination, TOPIC_PREFIX};
use super::link::{self, error_destination, reply_destination, Link, LinkRequest};
use super::outlet::{Body, Framing, Outlet};
use super::replies::envelope;
use crate::event::{EventSink, IsolateEvent, IsolateGone, RequestAnswer, UpgradeDecision};
use crate::isolate::HandlerSlot;
use crate::limits::Limits;
use crate::net::pump::Ending;
use crate::net::stomp::{Frame, FrameError, FrameReader, Item, Version};
use crate::stats::Traffic;
use crate::workspace::Endpoint;
use tokio_tungstenite::tungstenite::Message;

/// Where pages send to an endpoint (Spring's application prefix `/ws`, then `/stomp/{endpoint}`).
const SEND_PREFIX: &str = "/ws/stomp/";

/// What the upgrade to `/stomp` told about the peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub address: SocketAddr,
    /// Its `Origin`, checked against an endpoint's `allowedOrigins`.
    pub origin: Option<String>,
    /// The upgrade request as `onUpgrade` sees it, but for `endpoint` (filled in per endpoint).
    pub request: serde_json::Value,
}

/// One STOMP session.
pub struct Session {
    /// The server's state.
    state: AppState,
    /// Where its frames go.
    outlet: Arc<Outlet>,
    /// Who it is.
    peer: Peer,
    /// What may change as frames arrive.
    inner: Mutex<Inner>,
    /// Replies waiting for their handler's answer, written in order by [`ReplyWriter`].
    replies: mpsc::UnboundedSender<PendingReply>,
    /// The session's number, in the order sessions started: of a handler with several
    /// instances, the session uses the one this picks (for its messages and its links alike).
    spread: usize,
}

/// The number the next session gets (see [`Session::spread`]).
static NEXT_SESSION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes a session's replies in order; runs beside the session's socket (see [`ReplyWriter::run`]).
pub struct ReplyWriter {
    /// The session.
    session: Weak<Session>,
    /// Replies to write.
    pending: mpsc::UnboundedReceiver<PendingReply>,
}

/// The session's changing state.
struct Inner {
    /// Bytes received, read as frames.
    reader: FrameReader,
    /// The version agreed by CONNECT; `None` before it.
    version: Option<Version>,
    /// Subscriptions by id: their destinations.
    subscriptions: HashMap<String, String>,
    /// The session's links to endpoints (see `link`), by endpoint.
    links: HashMap<Arc<str>, Link>,
    /// Routes to the endpoints this session sent to, by endpoint.
    routes: HashMap<Arc<str>, Route>,
    /// `onUpgrade` decisions for this session, by endpoint: the data, or the refusal's reason.
    decisions: HashMap<Arc<str>, Result<Option<String>, String>>,
    /// The first endpoint the session sent to or subscribed to: where its socket is best driven.
    home_hint: Option<Arc<str>>,
    /// DISCONNECT, an ERROR or the socket's end: nothing more is read.
    ended: bool,
}

/// A reply to write once its handler has answered.
struct PendingReply {
    /// The endpoint the message was sent to.
    endpoint: Arc<str>,
    /// The sender's `from`, echoed in the envelope.
    from: String,
    /// The reply: the handler's answer to come, or a text known at once.
    reply: Reply,
    /// The endpoint's traffic counters, when the message reached its handler.
    traffic: Option<Arc<Traffic>>,
}

/// What a SEND to an endpoint needs, kept per session while the endpoint's definition stays
/// the same: the handler's slot and the endpoint's counters are found once, not per message.
#[derive(Clone)]
struct Route {
    /// The endpoint's definition the route was made for (compared by address).
    endpoint: Arc<Endpoint>,
    /// Its handler.
    handler: Arc<HandlerSlot>,
    /// Its traffic counters.
    traffic: Arc<Traffic>,
}

/// Where a reply's text comes from.
enum Reply {
    /// The handler's answer.
    Answer(oneshot::Receiver<RequestAnswer>),
    /// Known at once (an unknown endpoint, a handler that did not load).
    Now(String),
}

impl Session {
    /// A new session on a socket whose outbound queue is `outlet`'s, and the writer of its
    /// replies (to run beside its socket, on the same thread).
    pub fn start(
        state: AppState,
        outlet: Arc<Outlet>,
        peer: Peer,
        framing: Framing,
    ) -> (Arc<Self>, ReplyWriter) {
        let limit = state.runtime.limits.max_message_size;
        let (replies, pending) = mpsc::unbounded_channel();
        let session = Arc::new(Self {
            state,
            outlet: outlet.clone(),
            peer,
            inner: Mutex::new(Inner {
                reader: FrameReader::new(limit),
                version: None,
                subscriptions: HashMap::new(),
                links: HashMap::new(),
                routes: HashMap::new(),
                decisions: HashMap::new(),
                home_hint: None,
                ended: false,
            }),
            replies,
            spread: NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        if framing == Framing::SockJs {
            let _ = outlet.sockjs("o");
        }
        let writer = ReplyWriter {
            session: Arc::downgrade(&session),
            pending,
        };
        (session, writer)
    }

    /// The first endpoint the session used, if any.
    pub fn home_hint(&self) -> Option<Arc<str>> {
        self.inner.lock().home_hint.clone()
    }

    /// Whether the session has ended (DISCONNECT, an ERROR).
    pub fn has_ended(&self) -> bool {
        self.inner.lock().ended
    }

    /// Notes the endpoint the session uses, the first time.
    fn hint(&self, endpoint: &Arc<str>) {
        self.inner
            .lock()
            .home_hint
            .get_or_insert_with(|| endpoint.clone());
    }

    /// The peer's address.
    pub fn address(&self) -> SocketAddr {
        self.peer.address
    }

    /// The session's number.
    pub fn number(&self) -> u64 {
        self.outlet.session
    }

    /// Bytes from the socket (for SockJS, already taken out of its frames).
    pub async fn received(&self, bytes: &[u8]) {
        let mut first = true;
        loop {
            let item = {
                let mut inner = self.inner.lock();
                if inner.ended {
                    return;
                }
                if first {
                    inner.reader.push(bytes);
                    first = false;
                }
                inner.reader.next_item()
            };
            match item {
                Ok(Some(Item::Frame(frame))) => self.handle(frame).await,
                Ok(Some(Item::HeartBeat)) => {}
                Ok(None) => return,
                Err(error) => return self.unreadable(error),
            }
        }
    }

    /// A frame that cannot be read: ERROR, and the socket closes (1009 for one too large).
    fn unreadable(&self, error: FrameError) {
        tracing::warn!(session = self.number(), peer = %self.peer.address, "STOMP frame refused: {error}");
        let code = match error {
            FrameError::TooLarge { .. } => 1009,
            _ => 1002,
        };
        self.fail(&error.to_string(), code);
    }

    /// A SockJS message that is not a JSON array of strings.
    pub fn refuse_sockjs(&self) {
        self.fail(
            "a SockJS message must be a JSON array of strings, such as [\"SEND\\n...\"]",
            1002,
        );
    }

    /// ERROR then close, and nothing more is read.
    fn fail(&self, message: &str, code: u16) {
        self.inner.lock().ended = true;
        self.outlet.fail(message, code);
    }

    async fn handle(&self, frame: Frame) {
        let connected = self.inner.lock().version.is_some();
        if !connected {
            return match frame.command.as_str() {
                "CONNECT" | "STOMP" => self.connect(&frame),
                other => self.fail(
                    &format!("expected CONNECT (or STOMP) as the first frame, got {other}"),
                    1002,
                ),
            };
        }
        match frame.command.as_str() {
            "SEND" => self.send(&frame).await,
            "SUBSCRIBE" => self.subscribe(&frame).await,
            "UNSUBSCRIBE" => self.unsubscribe(&frame).await,
            "DISCONNECT" => return self.disconnect(&frame).await,
            "ACK" | "NACK" | "BEGIN" | "COMMIT" | "ABORT" => {}
            "CONNECT" | "STOMP" => return self.fail("already connected", 1002),
            other => {
                return self.fail(
                    &format!("unknown command {other}: expected SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT or DISCONNECT"),
                    1002,
                )
            }
        }
        self.receipt(&frame);
    }

    /// A RECEIPT, if the frame asked for one.
    fn receipt(&self, frame: &Frame) {
        if let Some(receipt) = frame.get("receipt") {
            let _ = self
                .outlet
                .send(&Frame::new("RECEIPT").header("receipt-id", receipt));
        }
    }

    fn connect(&self, frame: &Frame) {
        let Some(version) = Version::negotiate(frame.get("accept-version")) else {
            let _ = self.outlet.send(
                &Frame::new("ERROR")
                    .header("version", "1.0,1.1,1.2")
                    .header("message", "unsupported STOMP version"),
            );
            return self.fail(
                &format!(
                    "none of the STOMP versions asked for ({}) is spoken here: 1.0, 1.1 and 1.2 are",
                    frame.get("accept-version").unwrap_or_default()
                ),
                1002,
            );
        };
        {
            let mut inner = self.inner.lock();
            inner.version = Some(version);
            inner.reader.set_version(version);
        }
        self.outlet.set_version(version);
        // Dirigible's broker sends no heart-beats and asks for none; old stomp.js needs the
        // header to be there.
        let _ = self.outlet.send(
            &Frame::new("CONNECTED")
                .header("version", version.as_str())
                .header("heart-beat", "0,0")
                .header("server", concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
                .header("session", self.number().to_string()),
        );
    }

    async fn send(&self, frame: &Frame) {
        let Some(destination) = frame.get("destination") else {
            return self.fail("SEND frame without a destination header", 1002);
        };
        if let Some(endpoint) = destination.strip_prefix(SEND_PREFIX) {
            return self.send_to_endpoint(endpoint, frame).await;
        }
        if is_broker_destination(destination) {
            let content_type = frame.get("content-type").unwrap_or("text/plain");
            return match destination.strip_prefix(TOPIC_PREFIX) {
                // A topic is shared with raw connections: the registry reaches both (the broker
                // is its relay).
                Some(topic) => {
                    let message = match std::str::from_utf8(&frame.body) {
                        Ok(text) => Message::text(text),
                        Err(_) => Message::binary(frame.body.clone()),
                    };
                    self.state.runtime.connections.publish(topic, message);
                }
                None => {
                    self.state
                        .stomp
                        .deliver(destination, content_type, Body::Bytes(&frame.body));
                }
            };
        }
        self.fail(
            &format!(
                "cannot SEND to {destination}: send to /ws/stomp/{{endpoint}}, /topic/... or /queue/..."
            ),
            1002,
        );
    }

    /// Dirigible's SEND to an endpoint: body `{"from": "...", "text": "..."}`.
    async fn send_to_endpoint(&self, name: &str, frame: &Frame) {
        let endpoint: Arc<str> = name.into();
        let Some(found) = self.state.runtime.endpoints.endpoint(name) else {
            return self.reply_now(
                endpoint,
                String::new(),
                format!("Websocket for endpoint does not exist: {name}"),
            );
        };
        let (from, text) = match read_body(&frame.body) {
            Ok(body) => body,
            Err(reason) => {
                let reason = format!("message to {name} not read: {reason}");
                self.to_errors(name, &reason);
                // The handler hears it too, as Dirigible's does.
                if let Ok(handler) = self.handler(&found).await {
                    let _ = handler
                        .request(self.spread, endpoint, reason, String::new(), true)
                        .await;
                }
                return;
            }
        };
        let limit = found
            .options
            .max_message_size
            .unwrap_or(self.state.runtime.limits.max_message_size);
        if text.len() > limit {
            return self.to_errors(
                name,
                &format!(
                    "message to {name} not delivered: {} bytes, more than the endpoint's limit of {limit}",
                    text.len()
                ),
            );
        }
        let Route {
            handler, traffic, ..
        } = match self.route(&endpoint, &found).await {
            Ok(route) => route,
            Err(error) => return self.reply_now(endpoint, from, error),
        };
        self.hint(&endpoint);
        if let Err(refusal) = self.admitted(&found, &handler).await {
            return self.to_errors(name, &refusal);
        }
        traffic.received(text.len());
        let reply = match handler
            .request(self.spread, endpoint.clone(), text, from.clone(), false)
            .await
        {
            Ok(answer) => Reply::Answer(answer),
            Err(IsolateGone) => {
                Reply::Now(format!("endpoint {name}: its handler is not available"))
            }
        };
        let _ = self.replies.send(PendingReply {
            endpoint,
            from,
            reply,
            traffic: Some(traffic),
        });
    }

    /// A reply known at once, written after the replies before it.
    fn reply_now(&self, endpoint: Arc<str>, from: String, text: String) {
        let _ = self.replies.send(PendingReply {
            endpoint,
            from,
            reply: Reply::Now(text),
            traffic: None,
        });
    }

    /// The route to `endpoint` (defined by `found`): the cached one while the definition is
    /// the same and its handler serves, else found afresh (loading the handler if need be).
    async fn route(&self, endpoint: &Arc<str>, found: &Arc<Endpoint>) -> Result<Route, String> {
        if let Some(route) = self.inner.lock().routes.get(endpoint) {
            if Arc::ptr_eq(&route.endpoint, found) && route.handler.is_serving() {
                return Ok(route.clone());
            }
        }
        let handler = self.handler(found).await?;
        let route = Route {
            endpoint: found.clone(),
            handler,
            traffic: self.state.runtime.stats.endpoint(endpoint),
        };
        self.inner
            .lock()
            .routes
            .insert(endpoint.clone(), route.clone());
        Ok(route)
    }

    /// The endpoint's handler, or why it is not there.
    async fn handler(&self, endpoint: &Endpoint) -> Result<Arc<HandlerSlot>, String> {
        self.state
            .runtime
            .handler(&endpoint.handler_file)
            .await
            .map_err(|error| {
                format!(
                    "endpoint \"{}\": its handler failed to load: {error}",
                    endpoint.name
                )
            })
    }

    /// Whether this session may use `endpoint`: its `allowedOrigins`, and its handler's
    /// `onUpgrade` (asked once per session). The data `onUpgrade` attached, or why not.
    async fn admitted(
        &self,
        endpoint: &Endpoint,
        handler: &HandlerSlot,
    ) -> Result<Option<String>, String> {
        if let Some(origin) = &self.peer.origin {
            let allowed = endpoint
                .options
                .allowed_origins
                .as_deref()
                .unwrap_or(&self.state.runtime.limits.allowed_origins);
            if !allowed.is_empty() && !Limits::origin_allowed(allowed, origin) {
                return Err(format!(
                    "origin {origin} is not allowed to connect to endpoint \"{}\"",
                    endpoint.name
                ));
            }
        }
        if !handler.has_on_upgrade() {
            return Ok(None);
        }
        let name: Arc<str> = endpoint.name.as_str().into();
        if let Some(decision) = self.inner.lock().decisions.get(&name) {
            return decision.clone();
        }
        let mut request = self.peer.request.clone();
        request["endpoint"] = endpoint.name.clone().into();
        let limit = self.state.runtime.limits.event_time + std::time::Duration::from_secs(1);
        let decision =
            match tokio::time::timeout(limit, handler.upgrade(self.spread, request.to_string()))
                .await
            {
                Ok(Some(UpgradeDecision::Accept { data })) => Ok(data),
                Ok(Some(UpgradeDecision::Refuse { reason, .. })) => Err(reason),
                Ok(None) => Err(format!(
                    "endpoint \"{}\": its handler is not available",
                    endpoint.name
                )),
                Err(_) => Err(format!(
                    "endpoint \"{}\": onUpgrade did not answer in time",
                    endpoint.name
                )),
            };
        self.inner.lock().decisions.insert(name, decision.clone());
        decision
    }

    /// A text message on the session's subscriptions to `/user/queue/errors/{endpoint}`.
    fn to_errors(&self, endpoint: &str, text: &str) {
        tracing::debug!(session = self.number(), endpoint, "{text}");
        let destination = error_destination(endpoint);
        self.to_subscribers(&destination, "text/plain", Body::Text(text));
    }

    /// A MESSAGE to each of the session's subscriptions to `destination`.
    fn to_subscribers(&self, destination: &str, content_type: &str, body: Body<'_>) {
        let inner = self.inner.lock();
        for (id, _) in inner
            .subscriptions
            .iter()
            .filter(|(_, d)| *d == destination)
        {
            let _ = self.outlet.message(destination, id, content_type, body);
        }
    }

    async fn subscribe(&self, frame: &Frame) {
        let Some(destination) = frame.get("destination") else {
            return self.fail("SUBSCRIBE frame without a destination header", 1002);
        };
        // STOMP 1.0 makes the id optional: the destination stands for it.
        let id = frame.get("id").unwrap_or(destination).to_string();
        self.inner
            .lock()
            .subscriptions
            .insert(id.clone(), destination.to_string());
        if is_broker_destination(destination) {
            self.state.stomp.subscribe(destination, &self.outlet, &id);
            // A topic held here draws its publishes from the other nodes too.
            if let Some(topic) = destination.strip_prefix(TOPIC_PREFIX) {
                self.state.runtime.connections.hold_topic(topic);
            }
            return;
        }
        if let Some(endpoint) = destination.strip_prefix("/user/queue/reply/") {
            self.link(endpoint, &id).await;
        }
    }

    /// Beyond Dirigible: a subscription to an endpoint's replies makes the session a connection
    /// of that endpoint (see `link`). A refusal (origin, limits, `onUpgrade`) goes to its error
    /// queue; the subscription stays, as a plain one.
    async fn link(&self, name: &str, subscription: &str) {
        let endpoint: Arc<str> = name.into();
        if self.inner.lock().links.contains_key(&endpoint) {
            return;
        }
        let Some(found) = self.state.runtime.endpoints.endpoint(name) else {
            return;
        };
        let Ok(handler) = self.handler(&found).await else {
            return;
        };
        self.hint(&endpoint);
        let data = match self.admitted(&found, &handler).await {
            Ok(data) => data,
            Err(refusal) => return self.to_errors(name, &refusal),
        };
        let runtime = &self.state.runtime;
        let slot = match runtime.connections.reserve(
            &endpoint,
            runtime.limits.max_connections,
            found.options.max_connections,
        ) {
            Ok(slot) => slot,
            Err(full) => return self.to_errors(name, &full.to_string()),
        };
        let link = link::open(
            &self.state,
            &self.outlet,
            LinkRequest {
                endpoint: endpoint.clone(),
                handler,
                spread: self.spread,
                subscription,
                slot,
                data,
                peer: self.peer.address,
            },
        )
        .await;
        let replaced = {
            let mut inner = self.inner.lock();
            if inner.ended {
                Some(link)
            } else {
                inner.links.insert(endpoint.clone(), link);
                None
            }
        };
        // The session ended while the link opened: it closes at once.
        if let Some(link) = replaced {
            link::close(&self.state, endpoint, link, Ending::abnormal()).await;
        }
    }

    async fn unsubscribe(&self, frame: &Frame) {
        let Some(id) = frame.get("id").or(frame.get("destination")) else {
            return self.fail("UNSUBSCRIBE frame without an id header", 1002);
        };
        let unlinked = {
            let mut inner = self.inner.lock();
            inner.subscriptions.remove(id);
            let endpoint = inner
                .links
                .iter()
                .find(|(_, link)| link.subscription == id)
                .map(|(endpoint, _)| endpoint.clone());
            endpoint.and_then(|e| inner.links.remove(&e).map(|link| (e, link)))
        };
        if let Some(destination) = self.state.stomp.unsubscribe(self.number(), id) {
            self.released(&destination);
        }
        if let Some((endpoint, link)) = unlinked {
            let ending = Ending {
                code: 1000,
                reason: "unsubscribed".into(),
                was_clean: true,
            };
            link::close(&self.state, endpoint, link, ending).await;
        }
    }

    async fn disconnect(&self, frame: &Frame) {
        self.receipt(frame);
        self.inner.lock().ended = true;
        let ending = Ending {
            code: 1000,
            reason: "DISCONNECT".into(),
            was_clean: true,
        };
        self.end_links(&ending).await;
        self.outlet.close(1000, "");
    }

    /// The socket ended: links close (each handler hears `onClose` once) and the session leaves
    /// the broker.
    pub async fn ended(&self, ending: Ending) {
        self.inner.lock().ended = true;
        self.end_links(&ending).await;
        for destination in self.state.stomp.closed(self.number()) {
            self.released(&destination);
        }
    }

    /// A subscription to `destination` ended: a topic is held one fewer time here.
    fn released(&self, destination: &str) {
        if let Some(topic) = destination.strip_prefix(TOPIC_PREFIX) {
            self.state.runtime.connections.release_topic(topic);
        }
    }

    async fn end_links(&self, ending: &Ending) {
        let links: Vec<(Arc<str>, Link)> = self.inner.lock().links.drain().collect();
        for (endpoint, link) in links {
            link::close(&self.state, endpoint, link, ending.clone()).await;
        }
    }
}

impl EventSink for Session {
    async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
        match event {
            IsolateEvent::Text { text, .. } => self.received(text.as_bytes()).await,
            IsolateEvent::Binary { data, .. } => self.received(&data).await,
            _ => {}
        }
        Ok(())
    }
}

/// Dirigible's body: `{"from": "<nickname>", "text": "<payload>"}` (`from` optional).
#[derive(serde::Deserialize)]
struct SendBody {
    /// The sender's nickname.
    from: Option<serde_json::Value>,
    /// The payload.
    text: Option<serde_json::Value>,
}

/// The `from` and `text` of a body, or why it is not Dirigible's.
fn read_body(body: &[u8]) -> Result<(String, String), String> {
    let body: SendBody = serde_json::from_slice(body).map_err(|error| {
        format!("the body must be JSON such as {{\"from\": \"me\", \"text\": \"hello\"}} ({error})")
    })?;
    let text = match body.text {
        Some(serde_json::Value::String(text)) => text,
        Some(other) if !other.is_null() => other.to_string(),
        _ => return Err("the body has no \"text\"".into()),
    };
    let from = match body.from {
        Some(serde_json::Value::String(from)) => from,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Ok((from, text))
}

impl ReplyWriter {
    /// Writes replies in the order their messages arrived, each once its handler has answered,
    /// to the session's subscriptions to the endpoint's reply destination. Runs until the
    /// session is gone (the caller stops polling it when the socket ends).
    pub async fn run(self) {
        let ReplyWriter {
            session,
            mut pending,
        } = self;
        while let Some(reply) = pending.recv().await {
            write_reply(&session, reply).await;
        }
    }
}

/// Writes one reply once its handler has answered.
async fn write_reply(session: &Weak<Session>, reply: PendingReply) {
    let text = match reply.reply {
        Reply::Now(text) => Some(text),
        Reply::Answer(answer) => match answer.await {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => Some(error),
            Err(_) => Some(format!(
                "endpoint {}: its handler stopped before it answered",
                reply.endpoint
            )),
        },
    };
    let (Some(text), Some(session)) = (text, session.upgrade()) else {
        return;
    };
    let destination = reply_destination(&reply.endpoint);
    let body = envelope(&reply.from, &text);
    if let Some(traffic) = &reply.traffic {
        traffic.sent(body.len());
    }
    session.to_subscribers(&destination, "application/json", Body::Text(&body));
}
