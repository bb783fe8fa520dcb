//! Connecting one client and pumping it, with 4D's event order: `onOpen` at most once, any
//! number of `onMessage`, at most one `onError`, and `onClose` exactly once, also when the
//! connection never opened.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{header, HeaderName, HeaderValue as HttpHeaderValue};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::Connector;

use super::{
    tls, ClientEntry, ClientError, ClientId, ClientRegistry, ClientRequest, ClientStatus,
    HeaderValue, Protocols,
};
use crate::isolate::{IsolateEvent, IsolateHost, Target};
use crate::outbox::OutboxReader;
use crate::socket::{pump, Ending, Incoming, Peer, PumpOptions};

/// The connect timeout when the options give none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's request, checked and ready to connect.
pub struct Prepared {
    request: Request,
    connector: Connector,
    timeout: Duration,
}

/// Validates a `createWebsocket` call before anything is registered, so mistakes throw at once.
pub fn prepare(request: &ClientRequest) -> Result<Prepared, ClientError> {
    let invalid = |message: String| ClientError::Invalid(message);
    let uri = request.uri.trim();
    let scheme = uri
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    let secure = match scheme.as_deref() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(invalid(format!(
                "uri {uri:?} must start with ws:// or wss://"
            )))
        }
    };
    let mut http_request = uri
        .into_client_request()
        .map_err(|e| invalid(format!("uri {uri:?} is not a valid WebSocket URL: {e}")))?;
    let options = &request.options;
    let headers = http_request.headers_mut();
    for (name, value) in &options.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("headers: {name:?} is not a valid header name")))?;
        let values = match value {
            HeaderValue::One(one) => vec![one.clone()],
            HeaderValue::Many(many) => many.clone(),
        };
        for value in values {
            let header_value = HttpHeaderValue::from_str(&value).map_err(|_| {
                invalid(format!(
                    "headers: the value of {name:?} is not a valid header value"
                ))
            })?;
            headers.append(header_name.clone(), header_value);
        }
    }
    if let Some(protocols) = &options.protocols {
        let list = match protocols {
            Protocols::One(one) => vec![one.clone()],
            Protocols::Many(many) => many.clone(),
        };
        if list.iter().any(|p| p.is_empty() || p.contains([',', ' '])) {
            return Err(invalid(format!(
                "protocols: {list:?}: each must be a non-empty token without commas or spaces"
            )));
        }
        if !list.is_empty() {
            let value = HttpHeaderValue::from_str(&list.join(", "))
                .map_err(|_| invalid("protocols: not valid in a header".into()))?;
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    let connector = if secure {
        Connector::Rustls(
            tls::client_config(&options.tls, &request.workspace_root).map_err(invalid)?,
        )
    } else {
        Connector::Plain
    };
    let timeout = match options.connect_timeout_ms {
        Some(0) => return Err(invalid("connectTimeoutMs must be at least 1".into())),
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    Ok(Prepared {
        request: http_request,
        connector,
        timeout,
    })
}

/// Connects and pumps one client until it ends; every outcome reaches its handler.
pub async fn connect_client(
    id: ClientId,
    entry: Arc<ClientEntry>,
    prepared: Prepared,
    queue: OutboxReader,
    isolates: Weak<IsolateHost>,
    registry: Arc<ClientRegistry>,
) {
    let target = Target::Client(id);
    let Some(host) = isolates.upgrade() else {
        registry.remove(id);
        return;
    };
    let limits = host.services().limits.clone();
    let traffic = host.services().stats.clients.clone();
    let isolate = match host.isolate_for(&entry.handler_file).await {
        Ok(isolate) => isolate,
        Err(error) => {
            tracing::error!(client = id, uri = %entry.uri, "client not started: its handler failed to load: {error}");
            registry.remove(id);
            return;
        }
    };
    drop(host);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        prepared.request,
        Some(crate::server::websocket_config(limits.max_message_size)),
        true,
        Some(prepared.connector),
    );
    let failure = match tokio::time::timeout(prepared.timeout, connecting).await {
        Err(_) => Some(format!(
            "cannot connect to {}: timed out after {} ms",
            entry.uri,
            prepared.timeout.as_millis()
        )),
        Ok(Err(error)) => Some(format!(
            "cannot connect to {}: {}",
            entry.uri,
            describe(&error)
        )),
        Ok(Ok((socket, response))) => {
            let protocol = response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            *entry.protocol.lock() = protocol.clone();
            {
                let mut status = entry.status.lock();
                if *status == ClientStatus::Connecting {
                    *status = ClientStatus::Connected;
                }
            }
            tracing::debug!(client = id, uri = %entry.uri, "client connected");
            let _ = isolate
                .deliver(IsolateEvent::Open {
                    target,
                    endpoint: None,
                    protocol,
                    data: None,
                })
                .await;
            let ending = pump(
                socket,
                queue,
                &isolate,
                Peer {
                    kind: "client",
                    id,
                    name: &entry.handler,
                    address: &entry.uri,
                },
                PumpOptions {
                    keepalive: limits
                        .ping_interval
                        .map(|every| (every, limits.pong_timeout)),
                    traffic,
                },
                |incoming| match incoming {
                    Incoming::Text(text) => IsolateEvent::Text { target, text },
                    Incoming::Binary(data) => IsolateEvent::Binary { target, data },
                    Incoming::Error(message) => IsolateEvent::Error { target, message },
                },
                || entry.set_status(ClientStatus::Closing),
            )
            .await;
            finish(id, &registry, &isolate, ending).await;
            return;
        }
    };
    if let Some(message) = failure {
        tracing::warn!(client = id, handler = %entry.handler, "{message}");
        let _ = isolate
            .deliver(IsolateEvent::Error { target, message })
            .await;
        finish(id, &registry, &isolate, Ending::abnormal()).await;
    }
}

/// The client leaves the registry (and `getClients()`) before its `onClose` runs.
async fn finish(
    id: ClientId,
    registry: &ClientRegistry,
    isolate: &crate::isolate::HandlerSlot,
    ending: Ending,
) {
    registry.remove(id);
    tracing::debug!(client = id, code = ending.code, "client closed");
    let _ = isolate
        .deliver(IsolateEvent::Close {
            target: Target::Client(id),
            code: ending.code,
            reason: ending.reason,
            was_clean: ending.was_clean,
            endpoint: None,
        })
        .await;
}

/// A connection failure in words a user can act on.
fn describe(error: &WsError) -> String {
    match error {
        WsError::Io(io) => {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return format!("TLS handshake failed: {tls}");
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                _ => io.to_string(),
            }
        }
        WsError::Tls(tls) => format!("TLS handshake failed: {tls}"),
        WsError::Http(response) => format!(
            "the server refused the upgrade with HTTP {}{}",
            response.status(),
            response
                .body()
                .as_deref()
                .map(|b| format!(": {}", String::from_utf8_lossy(b).trim()))
                .unwrap_or_default()
        ),
        WsError::Url(url) => format!("invalid URL: {url}"),
        other => other.to_string(),
    }
}
