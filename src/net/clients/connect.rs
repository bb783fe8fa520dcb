//! Connecting one client and pumping it, with 4D's event order: `onOpen` at most once, any
//! number of `onMessage`, at most one `onError`, and `onClose` exactly once, also when the
//! connection never opened.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{header, HeaderName, HeaderValue as HttpHeaderValue};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::Connector;

use super::options::{ClientOptions, HeaderValue, Protocols};
use super::registry::{ClientEntry, ClientError, ClientRegistry, ClientStatus, NewClient};
use super::tls;
use crate::event::{ClientId, EventSink, IsolateEvent, Target};
use crate::limits::{CompressionMode, QueueBounds};
use crate::net::compression;
use crate::net::compression::socket::{CompressionSetup, Side, SocketCompression};
use crate::net::outbox::{outbox, OutboxReader};
use crate::net::pump::{pump, Ending, Peer, PumpOptions};
use crate::net::websocket_config;

/// The connect timeout when the options give none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client as the `createWebsocket` op asks for it.
pub struct ClientRequest {
    /// The `ws://` or `wss://` URI.
    pub uri: String,
    /// The handler, as a workspace path.
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The handler module that creates the client.
    pub creator: String,
    /// Which instance of its module creates it (0 for the first).
    pub creator_instance: usize,
    /// The options object.
    pub options: ClientOptions,
    /// Anchors a relative `tls.ca` path.
    pub workspace_root: PathBuf,
    /// Bounds of its outbound queue.
    pub queue: QueueBounds,
    /// Largest message accepted from the server.
    pub max_message_size: usize,
    /// Keepalive and counters of its socket.
    pub pump: PumpOptions,
    /// permessage-deflate is offered with this, unless the options turn it off.
    pub compression: CompressionSetup,
}

/// Registers a client (status "Connecting"). It starts connecting when the returned
/// [`ClientConnection`] is run: the creating isolate does that when its current turn of
/// JavaScript ends, so code that creates a client sees it "Connecting" until it yields, and
/// whatever it sends or closes meanwhile is delivered in order.
pub fn create(
    registry: &Arc<ClientRegistry>,
    request: ClientRequest,
) -> Result<(ClientId, ClientConnection), ClientError> {
    let prepared = prepare(&request)?;
    let (sender, queue) = outbox(request.queue);
    let (id, entry) = registry.insert(
        NewClient {
            uri: request.uri,
            handler: request.handler,
            handler_file: request.handler_file,
            data_type: request.options.data_type,
            creator: request.creator,
        },
        sender,
    );
    // A client handled by its creator's own module runs its events where the creator's module
    // state is; another module's clients are spread over its instances by id.
    let spread = if entry.handler == entry.creator {
        request.creator_instance
    } else {
        id as usize
    };
    let connection = ClientConnection {
        id,
        entry,
        spread,
        prepared,
        queue,
        registry: registry.clone(),
        max_message_size: request.max_message_size,
        pump: request.pump,
        compression: (request.options.compression != Some(false)).then_some(request.compression),
        _counted: Counted::new(registry.clone()),
    };
    Ok((id, connection))
}

/// A client's request, checked and ready to connect.
pub struct Prepared {
    /// The upgrade request, with the options' headers and subprotocols.
    request: Request,
    /// Plain TCP, or TLS with the options' trust.
    connector: Connector,
    /// How long connecting and the handshake may take.
    timeout: Duration,
}

/// Validates a `createWebsocket` call before anything is registered, so mistakes throw at once.
fn prepare(request: &ClientRequest) -> Result<Prepared, ClientError> {
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
    if options.compression != Some(false) {
        if let Some(offer) = compression::offer_header(CompressionMode::Shared) {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HttpHeaderValue::from_str(&offer).expect("the offer is ASCII"),
            );
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

/// A registered client, not yet connecting. Its registry counts it as a running task from
/// creation until it is dropped (run to its end, or abandoned), so `switchboard run` waits for
/// every client, started or not.
pub struct ClientConnection {
    /// The client's id.
    id: ClientId,
    /// Its registry entry.
    entry: Arc<ClientEntry>,
    /// Picks the instance of its handler that runs its events (see
    /// `HandlerSlot::deliver_spread`): the creator's instance, when the creator's module handles
    /// it; else the client's id.
    spread: usize,
    /// The request, checked.
    prepared: Prepared,
    /// What its pump writes.
    queue: OutboxReader,
    /// Where it is registered.
    registry: Arc<ClientRegistry>,
    /// Largest message accepted from the server.
    max_message_size: usize,
    /// Keepalive and counters of its socket.
    pump: PumpOptions,
    /// permessage-deflate, offered when set.
    compression: Option<CompressionSetup>,
    /// Counts the client as a running task of its registry while it exists.
    _counted: Counted,
}

/// A client counted as a running task of its registry, until dropped.
struct Counted(Arc<ClientRegistry>);

impl Counted {
    /// Counts one more running client task.
    fn new(registry: Arc<ClientRegistry>) -> Self {
        registry.task_started();
        Self(registry)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.task_ended();
    }
}

impl ClientConnection {
    /// The client's handler module, whose isolate must run before the client does.
    pub fn handler_file(&self) -> &std::path::Path {
        &self.entry.handler_file
    }

    /// Picks the instance of its handler that runs its events: its creator's, when the
    /// creator's module handles it (where the module state that made it is), else one by id.
    pub fn spread(&self) -> usize {
        self.spread
    }

    /// The client's handler could not be started: the client ends without connecting.
    pub fn abandon(self, why: &str) {
        tracing::error!(client = self.id, uri = %self.entry.uri, "client not started: {why}");
        self.registry.remove(self.id);
    }

    /// Connects and pumps the client until it ends; every outcome reaches `handler`, with 4D's
    /// event order.
    pub async fn run<H: EventSink>(self, handler: &H) {
        let ClientConnection {
            id,
            entry,
            spread: _,
            prepared,
            queue,
            registry,
            max_message_size,
            pump: mut pump_options,
            compression: setup,
            _counted,
        } = self;
        let entry = &entry;
        let target = Target::Client(id);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            prepared.request,
            Some(websocket_config(max_message_size).compressed_messages(setup.is_some())),
            true,
            Some(prepared.connector),
        );
        let timeout = prepared.timeout;
        let connected = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) => Err(format!(
                "cannot connect to {}: {}",
                entry.uri,
                describe(&error)
            )),
            Err(_) => Err(format!(
                "cannot connect to {}: timed out after {} ms",
                entry.uri,
                timeout.as_millis()
            )),
        };
        let (socket, response) = match connected {
            Ok(connected) => connected,
            Err(message) => {
                tracing::warn!(client = id, handler = %entry.handler, "{message}");
                let _ = handler
                    .deliver(IsolateEvent::Error { target, message })
                    .await;
                finish(id, &registry, handler, Ending::abnormal()).await;
                return;
            }
        };
        match agreed_compression(response.headers(), setup.as_ref()) {
            Ok(compression) => pump_options.compression = compression,
            Err(message) => {
                let message = format!("connected to {}, but {message}", entry.uri);
                tracing::warn!(client = id, handler = %entry.handler, "{message}");
                let _ = handler
                    .deliver(IsolateEvent::Error { target, message })
                    .await;
                let mut socket = socket;
                let _ = tokio::time::timeout(
                    crate::net::pump::CLOSE_HANDSHAKE_TIMEOUT,
                    futures_util::SinkExt::send(
                        &mut socket,
                        crate::net::close::close_message(
                            1010,
                            "permessage-deflate answer refused".into(),
                        ),
                    ),
                )
                .await;
                finish(id, &registry, handler, Ending::abnormal()).await;
                return;
            }
        }
        let protocol = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        entry.connected(protocol.clone());
        tracing::debug!(client = id, uri = %entry.uri, "client connected");
        let _ = handler
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
            handler,
            Peer {
                target,
                name: &entry.handler,
                address: &entry.uri,
            },
            pump_options,
            || entry.set_status(ClientStatus::Closing),
        )
        .await;
        finish(id, &registry, handler, ending).await;
    }
}

/// The compression the server's answer agrees to, if it was offered (`setup`) and accepted; an
/// answer the offer does not allow, or windows the memory budget cannot hold, fail the client
/// (RFC 7692 section 7: a client must fail the connection on an answer it cannot use).
fn agreed_compression(
    headers: &tokio_tungstenite::tungstenite::http::HeaderMap,
    setup: Option<&CompressionSetup>,
) -> Result<Option<Arc<SocketCompression>>, String> {
    let answers = compression::extension_headers(headers);
    let Some(setup) = setup else {
        return match answers.is_empty() {
            true => Ok(None),
            false => Err(format!(
                "the server accepted extensions that were not offered: {}",
                answers.join(", ")
            )),
        };
    };
    let Some(agreed) =
        compression::check_answer(&answers, CompressionMode::Shared).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    SocketCompression::new(agreed, Side::Client, setup)
        .map(|socket| Some(Arc::new(socket)))
        .map_err(|exhausted| format!("the server keeps a compression window, and {exhausted}"))
}

/// The client leaves the registry (and `getClients()`) before its `onClose` runs.
async fn finish<H: EventSink>(
    id: ClientId,
    registry: &ClientRegistry,
    handler: &H,
    ending: Ending,
) {
    registry.remove(id);
    tracing::debug!(client = id, code = ending.code, "client closed");
    let _ = handler
        .deliver(ending.into_event(Target::Client(id), None))
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
