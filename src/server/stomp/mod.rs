//! Dirigible's browser pages (v8 and later): STOMP over a WebSocket at `/stomp`, and over SockJS
//! (`/stomp/info`, `/stomp/{server}/{session}/websocket`) for older pages; and the STOMP client
//! module those pages import (`/webjars/stomp__stompjs/esm6/index.js`).
//!
//! - [`outlet`]: writing frames to a session's socket (plain or SockJS framing).
//! - [`replies`]: Dirigible's reply envelope.
//! - [`broker`]: `/topic/...` and `/queue/...` subscriptions, shared with raw topics; the open
//!   sessions.
//! - [`link`]: a session subscribed to an endpoint's replies, as a connection of that endpoint.
//! - [`session`]: one session: frames in, handlers asked, replies out.

pub mod broker;
pub mod link;
pub mod outlet;
pub mod replies;
pub mod session;

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Peekable;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use self::outlet::{Framing, Outlet};
use self::session::{Peer, ReplyWriter, Session};
use super::state::AppState;
use super::upgrade::{
    adopt_upgraded, describe_upgrade, negotiate, refuse, refused_before_upgrade, websocket_key,
    UpgradedSocket,
};
use crate::event::{EventSink, IsolateEvent, IsolateGone, Target};
use crate::limits::Limits;
use crate::net::close::close_code_for;
use crate::net::compression::socket::SocketCompression;
use crate::net::connections::Reservation;
use crate::net::home::SocketHome;
use crate::net::movable::MovableTcp;
use crate::net::outbox::{outbox, Outbox, OutboxReader};
use crate::net::pump::{inflated, pump, Ending, Peer as PumpPeer, PumpOptions, PumpedSocket};
use crate::net::stomp::Version;
use crate::net::websocket_config;

/// How STOMP sockets are counted in the server's connection limit (not an endpoint name: those
/// cannot hold a `/`).
const STOMP_SOCKETS: &str = "/stomp";

/// SockJS's heart-beat interval (its servers' default).
const SOCKJS_HEART_BEAT: std::time::Duration = std::time::Duration::from_secs(25);

/// `GET /stomp`: a STOMP session over a WebSocket, with the subprotocol `v12.stomp`,
/// `v11.stomp` or `v10.stomp` echoed when the client offers one.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    accept(state, peer, request, Framing::Plain)
}

/// `GET /stomp/{server}/{session}/websocket`: SockJS's WebSocket transport.
pub async fn sockjs_upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    accept(state, peer, request, Framing::SockJs)
}

/// `GET /stomp/info`: what a SockJS client asks first. Only the WebSocket transport is offered.
pub async fn sockjs_info(headers: HeaderMap) -> Response {
    let entropy = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32;
    let body = serde_json::json!({
        "websocket": true,
        "cookie_needed": false,
        "origins": ["*:*"],
        "entropy": entropy,
    });
    let origin = headers
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(
                    "no-store, no-cache, no-transform, must-revalidate, max-age=0",
                ),
            ),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `GET /webjars/stomp__stompjs/esm6/index.js` (and `/switchboard/stomp.js`): our STOMP client
/// module, with the `Client` of @stomp/stompjs that Dirigible's pages use.
pub async fn client_library() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../../runtime_js/stomp-client.js"),
    )
        .into_response()
}

/// Checks the upgrade (as for any endpoint: shutdown, method, version, key, the server-wide
/// origins and connection limit), answers 101 and starts the session.
fn accept(state: AppState, peer: SocketAddr, mut request: Request, framing: Framing) -> Response {
    if let Some(refusal) = refused_before_upgrade(&state, &request) {
        return refusal;
    }
    let key = match websocket_key(request.headers()) {
        Ok(key) => key,
        Err(refusal) => return *refusal,
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limits = &state.runtime.limits;
    if let Some(origin) = &origin {
        if !limits.allowed_origins.is_empty()
            && !Limits::origin_allowed(&limits.allowed_origins, origin)
        {
            tracing::warn!(%peer, origin, "STOMP upgrade refused: origin not allowed");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed to connect"),
            );
        }
    }
    let slot =
        match state
            .runtime
            .connections
            .reserve(&STOMP_SOCKETS.into(), limits.max_connections, None)
        {
            Ok(slot) => slot,
            Err(full) => return refuse(StatusCode::SERVICE_UNAVAILABLE, full.to_string()),
        };
    let protocol = match framing {
        Framing::Plain => chosen_subprotocol(request.headers()),
        Framing::SockJs => None,
    };
    let session_peer = Peer {
        address: peer,
        origin,
        request: describe_upgrade(&request, peer),
    };
    // Every browser offers permessage-deflate; the server's mode (`serve --compression`) decides,
    // as for an endpoint whose descriptor does not choose. Counted under "/stomp".
    let compression = negotiate(
        &state.runtime,
        STOMP_SOCKETS,
        limits.compression,
        request.headers(),
        limits.max_message_size,
    );
    let answer = compression.as_ref().map(|(_, answer)| answer.clone());
    let compression = compression.map(|(socket, _)| socket);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let config =
        Some(websocket_config(limits.max_message_size).compressed_messages(answer.is_some()));
    let task_state = state.clone();
    let task = state.tasks.track_future(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%peer, "STOMP upgrade failed: {error}");
                return;
            }
        };
        let started = Started {
            state: task_state,
            peer: session_peer,
            framing,
            compression,
            _slot: slot,
        };
        match adopt_upgraded(upgraded) {
            Ok(UpgradedSocket::Tcp(stream, already_read)) => {
                let socket = WebSocketStream::from_partially_read(
                    MovableTcp::new(stream),
                    already_read,
                    Role::Server,
                    config,
                )
                .await;
                serve_movable(socket, started).await
            }
            Ok(UpgradedSocket::Other(upgraded)) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config)
                        .await;
                serve(socket, started).await
            }
            Err(error) => tracing::warn!(%peer, "STOMP connection lost after its upgrade: {error}"),
        }
    });
    tokio::spawn(task);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    if let Some(answer) = answer.and_then(|answer| HeaderValue::from_str(&answer).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    response
}

/// The newest STOMP subprotocol the client offers (`v12.stomp` first).
fn chosen_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    Version::NEWEST_FIRST
        .into_iter()
        .map(Version::subprotocol)
        .find(|p| offered.iter().any(|o| o == p))
}

/// A session whose socket is about to be served.
struct Started {
    /// The server's state.
    state: AppState,
    /// Who connected.
    peer: Peer,
    /// Plain or SockJS.
    framing: Framing,
    /// permessage-deflate, when the page offered it and the server's mode is on.
    compression: Option<Arc<SocketCompression>>,
    /// The socket's place in the server's connection limit.
    _slot: Reservation,
}

/// How long the first frames are awaited where the socket is (the network threads) before the
/// session runs there for good: a page subscribes as soon as it is connected.
const FIRST_FRAMES_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// At most this many messages are read before the socket is moved to its endpoint's home.
const FIRST_FRAMES_LIMIT: usize = 16;

/// A session about to be served: its state, its socket's outbound queue and reply writer.
struct Opened {
    /// The server's state.
    state: AppState,
    /// The session.
    session: Arc<Session>,
    /// Writes its replies.
    writer: ReplyWriter,
    /// The outbound queue's sending side, held while the socket is served.
    sender: Outbox,
    /// The outbound queue, which the pump writes.
    reader: OutboxReader,
    /// Plain or SockJS.
    framing: Framing,
    /// permessage-deflate, if agreed.
    compression: Option<Arc<SocketCompression>>,
    /// The socket's place in the server's connection limit.
    _slot: Reservation,
}

/// Opens the session of a socket.
fn open_session(started: Started) -> Opened {
    let Started {
        state,
        peer,
        framing,
        compression,
        _slot,
    } = started;
    let (sender, reader) = outbox(state.runtime.limits.send_queue);
    let number = state.stomp.next_session();
    let outlet = Arc::new(Outlet::new(number, sender.handle(), framing));
    state.stomp.opened(outlet.clone());
    let (session, writer) = Session::start(state.clone(), outlet.clone(), peer, framing);
    if framing == Framing::SockJs {
        tokio::spawn(sockjs_heart_beats(Arc::downgrade(&outlet)));
    }
    Opened {
        state,
        session,
        writer,
        sender,
        reader,
        framing,
        compression,
        _slot,
    }
}

/// A STOMP socket on plain TCP whose next message can be looked at before it is taken.
type FirstFramesSocket = Peekable<WebSocketStream<MovableTcp>>;

/// Serves a STOMP socket on plain TCP: its first frames are read here, and once they name an
/// endpoint the socket moves to that endpoint's handler thread (as a connection's socket does
/// at its upgrade), so that a message and its reply cost no thread switch.
async fn serve_movable(socket: WebSocketStream<MovableTcp>, started: Started) {
    let mut socket = socket.peekable();
    let opened = open_session(started);
    let sink = SessionSink {
        session: &opened.session,
        framing: opened.framing,
    };
    let target = Target::Connection(opened.session.number());
    let traffic = opened.state.runtime.stats.endpoint(STOMP_SOCKETS);
    for _ in 0..FIRST_FRAMES_LIMIT {
        // What is queued (SockJS's `o`, CONNECTED, receipts) goes out now: the client waits for
        // it before it names an endpoint.
        if write_leading(&mut socket, &opened.reader).await.is_err() {
            opened.session.ended(Ending::abnormal()).await;
            return;
        }
        if opened.session.home_hint().is_some() || opened.session.has_ended() {
            break;
        }
        // Only messages are taken here; anything else (a close, a ping, an error) is left for
        // the pump, which answers it as for any socket.
        // A compressed message is inflated here as the pump would (a browser compresses its
        // CONNECT and SUBSCRIBE too).
        let message =
            match tokio::time::timeout(FIRST_FRAMES_WAIT, Pin::new(&mut socket).peek()).await {
                Ok(Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Frame(_)))) => {
                    match socket.next().await {
                        Some(message) => inflated(message, opened.compression.as_deref()),
                        None => unreachable!("the message just looked at"),
                    }
                }
                _ => break,
            };
        let event = match message {
            Ok(Message::Text(text)) => {
                traffic.received(text.len());
                IsolateEvent::Text { target, text }
            }
            Ok(Message::Binary(data)) => {
                traffic.received(data.len());
                IsolateEvent::Binary { target, data }
            }
            Ok(other) => unreachable!("only data messages were taken, not {other:?}"),
            Err(error) => {
                // As the pump answers a message that does not inflate or is too large: the
                // close frame with its code is the last thing written.
                let (code, reason) = close_code_for(&error);
                tracing::warn!(
                    session = opened.session.number(),
                    "STOMP socket: closing with {code}: {error}"
                );
                opened.reader.close_now(code, reason);
                break;
            }
        };
        let _ = sink.deliver(event).await;
    }
    let home = match opened.session.home_hint() {
        Some(endpoint) => home_of(&opened.state, &endpoint).await,
        None => None,
    };
    let Some(home) = home else {
        return run(socket, opened).await;
    };
    if socket.get_mut().get_mut().detach().is_err() {
        return run(socket, opened).await;
    }
    let (done, finished) = tokio::sync::oneshot::channel();
    home.spawn(async move {
        if socket.get_mut().get_mut().attach().is_ok() {
            run(socket, opened).await;
        } else {
            opened.session.ended(Ending::abnormal()).await;
        }
        let _ = done.send(());
    });
    // The server's task tracker (shutdown waits for it) follows the session to its new home.
    let _ = finished.await;
}

/// Writes the messages queued for a socket whose pump does not run yet.
async fn write_leading(
    socket: &mut FirstFramesSocket,
    reader: &OutboxReader,
) -> Result<(), WsError> {
    let messages = reader.take_leading_messages();
    if messages.is_empty() {
        return Ok(());
    }
    for message in messages {
        socket.feed(message).await?;
    }
    socket.flush().await
}

/// The home of an endpoint's handler, while it runs.
async fn home_of(state: &AppState, endpoint: &str) -> Option<SocketHome> {
    let found = state.runtime.endpoints.endpoint(endpoint)?;
    let handler = state.runtime.handler(&found.handler_file).await.ok()?;
    handler.socket_home()
}

/// Serves one STOMP socket where it is (TLS sockets stay on the network threads).
async fn serve<S>(socket: S, started: Started)
where
    S: PumpedSocket,
{
    run(socket, open_session(started)).await
}

/// Pumps the socket until it closes, writing replies beside it; then the session ends.
async fn run<S>(socket: S, opened: Opened)
where
    S: PumpedSocket,
{
    let Opened {
        state,
        session,
        writer,
        sender,
        reader,
        framing,
        compression,
        _slot,
    } = opened;
    let number = session.number();
    let address = session.address();
    tracing::debug!(session = number, %address, "STOMP session served");
    let limits = &state.runtime.limits;
    let address_text = address.to_string();
    let sink = SessionSink {
        session: &session,
        framing,
    };
    let pumped = pump(
        socket,
        reader,
        &sink,
        PumpPeer {
            target: Target::Connection(number),
            name: STOMP_SOCKETS,
            address: &address_text,
        },
        PumpOptions {
            keepalive: limits
                .ping_interval
                .map(|every| (every, limits.pong_timeout)),
            traffic: state.runtime.stats.endpoint(STOMP_SOCKETS),
            compression,
        },
        || {},
    );
    // The writer runs as long as the socket: replies that come after are for a closed socket.
    let ending = tokio::select! {
        ending = pumped => ending,
        () = writer.run() => unreachable!("the session holds the writer's sender"),
    };
    tracing::debug!(session = number, %address, code = ending.code, "STOMP session closed");
    session.ended(ending).await;
    drop(sender);
}

/// SockJS's `h` every 25 seconds, for as long as the session's socket takes messages.
async fn sockjs_heart_beats(outlet: std::sync::Weak<Outlet>) {
    loop {
        tokio::time::sleep(SOCKJS_HEART_BEAT).await;
        match outlet.upgrade() {
            Some(outlet) if outlet.sockjs("h").is_ok() => {}
            _ => return,
        }
    }
}

/// What the pump delivers a STOMP socket's messages to: the session, after SockJS's framing is
/// taken off.
struct SessionSink<'a> {
    /// The session.
    session: &'a Arc<Session>,
    /// Plain or SockJS.
    framing: Framing,
}

impl EventSink for SessionSink<'_> {
    async fn deliver(&self, event: IsolateEvent) -> Result<(), IsolateGone> {
        if self.framing == Framing::Plain {
            return self.session.deliver(event).await;
        }
        // SockJS: a client message is a JSON array of strings (each a piece of the stream).
        let IsolateEvent::Text { text, .. } = event else {
            return Ok(());
        };
        if text.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<SockJsMessage>(text.as_str()) {
            Ok(SockJsMessage::Many(pieces)) => {
                for piece in pieces {
                    self.session.received(piece.as_bytes()).await;
                }
            }
            Ok(SockJsMessage::One(piece)) => self.session.received(piece.as_bytes()).await,
            Err(_) => self.session.refuse_sockjs(),
        }
        Ok(())
    }
}

/// A SockJS client message.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SockJsMessage {
    /// `["...", "..."]`, what clients send.
    Many(Vec<String>),
    /// `"..."`, accepted too.
    One(String),
}
