//! The WebSocket upgrade: every refusal (unknown endpoint, not a WebSocket request, origin not
//! allowed, no capacity left, refused by the handler's `onUpgrade`, handler failed to load) is an
//! HTTP answer with a plain-text reason, before any upgrade happens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::connection::{serve_connection, AcceptedUpgrade};
use super::state::AppState;
use crate::endpoints::Runtime;
use crate::event::HandlerLoadError;
use crate::event::UpgradeDecision;
use crate::isolate::{HandlerSlot, InstanceSink};
use crate::limits::{CompressionMode, Limits};
use crate::net::compression;
use crate::net::compression::socket::{CompressionSetup, Side, SocketCompression};
use crate::net::plain::PlainWebSocket;
use crate::net::websocket_config;
use crate::workspace::Endpoint;

/// A refusal: the status with a plain-text reason.
pub(super) fn refuse(status: StatusCode, reason: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason + "\n",
    )
        .into_response()
}

/// `GET /websockets/v4/service/{endpoint}`: checks the request, reserves a connection slot, asks
/// `onUpgrade` if the handler has one, and answers 101; the connection's task then runs on the
/// handler's thread.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    if let Some(refusal) = refused_before_upgrade(&state, &request) {
        return refusal;
    }
    let runtime = &state.runtime;
    let Some(endpoint) = runtime.endpoints.endpoint(&name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint \"{name}\" is served here; GET /websockets/v4/service lists the endpoints"),
        );
    };
    // The instance the connection will run on (the one with the fewest connections) is the one
    // asked, so that what its onUpgrade sets up is there for the connection's events.
    let (handler, instance) = match handler_instance(runtime, &endpoint).await {
        Ok(assigned) => assigned,
        Err(error) => {
            tracing::warn!(endpoint = %name, %peer, "upgrade refused: handler failed to load: {error}");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("endpoint \"{name}\": its handler failed to load: {error}"),
            );
        }
    };
    let key = match websocket_key(request.headers()) {
        Ok(key) => key,
        Err(refusal) => return *refusal,
    };
    if let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let allowed = endpoint
            .options
            .allowed_origins
            .as_deref()
            .unwrap_or(&runtime.limits.allowed_origins);
        if !allowed.is_empty() && !Limits::origin_allowed(allowed, origin) {
            tracing::warn!(endpoint = %name, %peer, origin, "upgrade refused: origin not allowed");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed to connect to endpoint \"{name}\""),
            );
        }
    }
    let endpoint_name: Arc<str> = name.as_str().into();
    let slot = match runtime.connections.reserve(
        &endpoint_name,
        runtime.limits.max_connections,
        endpoint.options.max_connections,
    ) {
        Ok(slot) => slot,
        Err(full) => {
            tracing::warn!(endpoint = %name, %peer, "upgrade refused: {full}");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, full.to_string());
        }
    };
    let data = if handler.has_on_upgrade() {
        let description = describe_request(&endpoint, &request, peer);
        match decide(&state, &instance, &endpoint, description).await {
            UpgradeDecision::Accept { data } => data,
            UpgradeDecision::Refuse { status, reason } => {
                tracing::info!(endpoint = %name, %peer, status, "upgrade refused by onUpgrade: {reason}");
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return refuse(status, reason);
            }
        }
    } else {
        None
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let max_message_size = endpoint
        .options
        .max_message_size
        .unwrap_or(runtime.limits.max_message_size);
    let compression = negotiate_compression(
        &state.runtime,
        &endpoint,
        request.headers(),
        max_message_size,
    );
    let answer = compression.as_ref().map(|(_, answer)| answer.clone());
    let accepted = Box::new(AcceptedUpgrade::register(
        state.clone(),
        endpoint_name,
        peer,
        instance,
        data,
        slot,
        compression.map(|(socket, _)| socket),
    ));
    let home = accepted.home().clone();
    let answer_given = answer.is_some();
    let task = state.tasks.track_future(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%peer, "upgrade failed: {error}");
                accepted.abandon();
                return;
            }
        };
        let config = Some(websocket_config(max_message_size).compressed_messages(answer_given));
        // The connection's task lives as long as the connection, and a future is as large as
        // its largest state: boxing each phase keeps only the phase it is in (an idle
        // connection held 5.4 KB of task, most of it states it had left; bench: idle memory).
        match adopt_upgraded(upgraded) {
            Ok(UpgradedSocket::Tcp(stream, already_read)) => {
                let socket = PlainWebSocket::from_partially_read(stream, already_read, config);
                Box::pin(serve_connection(socket, accepted)).await
            }
            Ok(UpgradedSocket::Other(upgraded)) => {
                let socket = Box::pin(WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    config,
                ))
                .await;
                Box::pin(serve_connection(socket, accepted)).await
            }
            Err(error) => {
                tracing::warn!(endpoint = accepted.endpoint(), %peer, "connection lost while moving it to its handler's thread: {error}");
                accepted.abandon();
            }
        }
    });
    home.spawn(task);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(answer) = answer.and_then(|answer| HeaderValue::from_str(&answer).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    response
}

/// The endpoint's handler, loaded if need be, and the instance a new connection is given to.
/// A handler unloaded between the two (unused, `--unload-idle`; or its endpoint's handler
/// changed) is loaded again once.
async fn handler_instance(
    runtime: &Runtime,
    endpoint: &Endpoint,
) -> Result<(Arc<HandlerSlot>, InstanceSink), HandlerLoadError> {
    let mut attempts = 0;
    loop {
        let handler = runtime.handler(&endpoint.handler_file).await?;
        if let Some(instance) = handler.assign() {
            return Ok((handler, instance));
        }
        attempts += 1;
        if attempts == 2 {
            return Err(HandlerLoadError::Stopped {
                file: handler.handler.clone(),
            });
        }
    }
}

/// permessage-deflate for a connection to `endpoint`: the first offer in the request that the
/// endpoint's mode (its descriptor's, or the server's) can honour, with the answer header.
fn negotiate_compression(
    runtime: &Runtime,
    endpoint: &Endpoint,
    headers: &HeaderMap,
    max_message_size: usize,
) -> Option<(Arc<SocketCompression>, String)> {
    let mode = endpoint
        .options
        .compression
        .unwrap_or(runtime.limits.compression);
    negotiate(runtime, &endpoint.name, mode, headers, max_message_size)
}

/// permessage-deflate in `mode` for a socket counted under `counted_as` (an endpoint, or STOMP's
/// sockets): the first offer in the request that the mode can honour, with the answer header. A
/// dedicated socket whose windows do not fit in the memory budget gets no context takeover
/// (shared compression) instead.
pub(super) fn negotiate(
    runtime: &Runtime,
    counted_as: &str,
    mode: CompressionMode,
    headers: &HeaderMap,
    max_message_size: usize,
) -> Option<(Arc<SocketCompression>, String)> {
    if mode == CompressionMode::Off {
        return None;
    }
    let agreed = compression::accept(&compression::extension_headers(headers), mode)?;
    let setup = CompressionSetup {
        min_bytes: runtime.limits.compression_min_bytes,
        level: runtime.limits.compression_level,
        max_message_size,
        counters: runtime.stats.compression(counted_as),
        budget: runtime.stats.compression_windows.clone(),
    };
    let socket = |agreed| SocketCompression::new(agreed, Side::Server, &setup);
    let (agreed, socket) = match socket(agreed) {
        Ok(socket) => (agreed, socket),
        Err(exhausted) => {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(endpoint = %counted_as, "{exhausted} (--compression-memory-mib): connections that ask for dedicated compression get shared compression until some close (said once)");
            }
            let agreed = agreed.without_takeover();
            (agreed, socket(agreed).ok()?)
        }
    };
    Some((Arc::new(socket), compression::answer_header(&agreed)))
}

/// An upgraded connection, ready for the WebSocket protocol.
pub(super) enum UpgradedSocket {
    /// Plain TCP, moved to the current thread's reactor, with the bytes the HTTP server read
    /// past the upgrade request.
    Tcp(tokio::net::TcpStream, Vec<u8>),
    /// Anything else (TLS): left with the network runtime's reactor.
    Other(hyper::upgrade::Upgraded),
}

/// Moves a plain TCP connection from the network runtime's reactor to the current one, so that
/// the thread running the connection's task is also the one its socket wakes.
pub(super) fn adopt_upgraded(
    upgraded: hyper::upgrade::Upgraded,
) -> std::io::Result<UpgradedSocket> {
    let parts = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => parts,
        Err(upgraded) => return Ok(UpgradedSocket::Other(upgraded)),
    };
    let stream = tokio::net::TcpStream::from_std(parts.io.into_inner().into_std()?)?;
    Ok(UpgradedSocket::Tcp(stream, parts.read_buf.to_vec()))
}

/// Asks the handler's `onUpgrade(request)`; no answer within the event time limit refuses.
async fn decide(
    state: &AppState,
    handler: &InstanceSink,
    endpoint: &Endpoint,
    description: String,
) -> UpgradeDecision {
    let limit = state.runtime.limits.event_time + std::time::Duration::from_secs(1);
    match tokio::time::timeout(limit, handler.upgrade(description)).await {
        Ok(Some(decision)) => decision,
        Ok(None) => UpgradeDecision::Refuse {
            status: 503,
            reason: format!(
                "endpoint \"{}\": its handler is not available",
                endpoint.name
            ),
        },
        Err(_) => UpgradeDecision::Refuse {
            status: 503,
            reason: format!(
                "endpoint \"{}\": onUpgrade did not answer in time",
                endpoint.name
            ),
        },
    }
}

/// The request as `onUpgrade` sees it: method, path, query, headers, cookies, remote address,
/// and the endpoint asked for.
fn describe_request(endpoint: &Endpoint, request: &Request, peer: SocketAddr) -> String {
    let mut description = describe_upgrade(request, peer);
    description["endpoint"] = endpoint.name.clone().into();
    description.to_string()
}

/// An upgrade request as `onUpgrade` sees it, but for its endpoint.
pub(super) fn describe_upgrade(request: &Request, peer: SocketAddr) -> serde_json::Value {
    let uri = request.uri();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let cookies: BTreeMap<String, String> = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    serde_json::json!({
        "method": request.method().as_str(),
        "url": uri.to_string(),
        "path": uri.path(),
        "query": query,
        "headers": headers,
        "cookies": cookies,
        "remoteAddress": peer.to_string(),
    })
}

/// The refusal of any upgrade (an endpoint's or `/stomp`'s) before anything else is looked at:
/// the server is shutting down, or the request is not an opening handshake.
pub(super) fn refused_before_upgrade(state: &AppState, request: &Request) -> Option<Response> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Some(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    not_an_upgrade_request(request)
}

/// RFC 6455 4.1: an opening handshake is a GET request over HTTP/1.1 or later. (The router
/// sends HEAD requests to the same handler as GET.)
fn not_an_upgrade_request(request: &Request) -> Option<Response> {
    if request.method() != Method::GET {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "a WebSocket endpoint answers only GET requests (an upgrade), not {}",
                request.method()
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Some(response);
    }
    if request.version() < Version::HTTP_11 {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "a WebSocket upgrade needs HTTP/1.1, not {:?}",
                request.version()
            ),
        ));
    }
    None
}

/// Checks that the request is a WebSocket upgrade (RFC 6455 4.2.1) and returns its key.
pub(super) fn websocket_key(headers: &HeaderMap) -> Result<String, Box<Response>> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|v| {
                    v.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(Box::new(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "this URL is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)".into(),
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut response = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: only version 13 is supported".into(),
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(response));
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(key) if !key.trim().is_empty() => Ok(key.trim().to_string()),
        _ => Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key header".into(),
        ))),
    }
}
