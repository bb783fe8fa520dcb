//! The WebSocket upgrade: every refusal (unknown endpoint, not a WebSocket request, handler that
//! failed to load) is an HTTP answer with a plain-text reason, before any upgrade happens.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::AppState;

/// Largest message accepted from a peer; a larger one closes the connection with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// tokio-tungstenite's default read buffer (128 KiB, allocated per connection) costs memory and
/// speed; 4 KiB measured best for many connections of small messages.
const READ_BUFFER_SIZE: usize = 4096;

pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(Some(DEFAULT_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(DEFAULT_MAX_MESSAGE_SIZE))
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason + "\n",
    )
        .into_response()
}

pub async fn upgrade(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let Some(endpoint) = state.endpoints.endpoint(&name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint \"{name}\" is served here; GET /websockets/v4/service lists the endpoints"),
        );
    };
    let isolate = match state.isolates.isolate_for(&endpoint.handler_file).await {
        Ok(isolate) => isolate,
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
    let on_upgrade = hyper::upgrade::on(&mut request);
    let connections = state.connections.clone();
    let endpoint_name: std::sync::Arc<str> = name.into();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config()),
                )
                .await;
                super::serve_connection(socket, endpoint_name, peer, isolate, connections).await;
            }
            Err(error) => tracing::debug!(%peer, "upgrade failed: {error}"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Checks that the request is a WebSocket upgrade (RFC 6455 4.2.1) and returns its key.
fn websocket_key(headers: &HeaderMap) -> Result<String, Box<Response>> {
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
