//! Outbound clients from JavaScript: `createWebsocket` and the client objects, usable from any
//! isolate since they carry only a client id. A new client starts connecting when the creating
//! isolate's current turn of JavaScript ends, through the `ClientHandlers` the isolate host
//! provides (it runs the client once the client's handler has an isolate).

use deno_core::op2;
use deno_core::OpState;
use tokio_tungstenite::tungstenite::Message;

use super::context::IsolateContext;
use crate::net::clients::{
    create, ClientConnection, ClientError, ClientInfo, ClientOptions, ClientRequest, ClientSummary,
};
use crate::net::close::{checked_close, CloseRequestError};
use crate::net::compression::socket::CompressionSetup;
use crate::net::pump::PumpOptions;
use crate::workspace::resolve_handler;

/// Clients created by one isolate's current turn of JavaScript, run when the turn ends.
#[derive(Default)]
pub struct PendingClients(Vec<ClientConnection>);

/// Runs the clients that the isolate's last turn of JavaScript created.
pub fn start_pending_clients(state: &mut OpState) {
    let pending = std::mem::take(&mut state.borrow_mut::<PendingClients>().0);
    if pending.is_empty() {
        return;
    }
    let handlers = state
        .borrow::<IsolateContext>()
        .services
        .client_handlers
        .upgrade();
    for client in pending {
        match &handlers {
            Some(handlers) => handlers.run_client(client),
            None => client.abandon("the runtime is shutting down"),
        }
    }
}

/// Why a client op failed, as JavaScript sees it.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ClientOpError {
    /// `createWebsocket` was called with something unusable: a `TypeError`.
    #[class(type)]
    #[error(transparent)]
    Invalid(ClientError),
    /// The client is not open, or its queue is full: an `Error`.
    #[class(generic)]
    #[error(transparent)]
    Failed(ClientError),
    /// A close code or reason no handler may use: a `RangeError`.
    #[class(range)]
    #[error(transparent)]
    Close(#[from] CloseRequestError),
}

impl From<ClientError> for ClientOpError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Invalid(_) => ClientOpError::Invalid(error),
            _ => ClientOpError::Failed(error),
        }
    }
}

/// Registers a client, to start connecting when this turn of JavaScript ends; returns its id at
/// once.
#[op2(fast)]
#[number]
pub fn op_ws_client_create(
    state: &mut OpState,
    #[string] uri: String,
    #[string] handler: String,
    #[string] options_json: String,
) -> Result<u64, ClientOpError> {
    let context = state.borrow::<IsolateContext>();
    let options: ClientOptions = if options_json.is_empty() {
        ClientOptions::default()
    } else {
        serde_json::from_str(&options_json)
            .map_err(|e| ClientError::Invalid(format!("options: {e}")))?
    };
    let paths = context.modules.paths();
    let handler_file =
        resolve_handler(handler.trim(), paths).map_err(|e| ClientError::Invalid(e.to_string()))?;
    let services = &context.services;
    let limits = &services.limits;
    let request = ClientRequest {
        uri,
        handler: paths.display(&handler_file),
        handler_file,
        creator: context.handler.clone(),
        creator_instance: context.instance,
        options,
        workspace_root: paths.root().to_path_buf(),
        queue: limits.send_queue,
        max_message_size: limits.max_message_size,
        pump: PumpOptions {
            keepalive: limits
                .ping_interval
                .map(|every| (every, limits.pong_timeout)),
            traffic: services.stats.clients.clone(),
            // Set once the server answers the offer (see `net::clients::connect`).
            compression: None,
        },
        compression: CompressionSetup {
            min_bytes: limits.compression_min_bytes,
            level: limits.compression_level,
            max_message_size: limits.max_message_size,
            counters: services.stats.clients_compression.clone(),
            budget: services.stats.compression_windows.clone(),
        },
    };
    let (id, client) = create(&services.clients, request)?;
    state.borrow_mut::<PendingClients>().0.push(client);
    Ok(id)
}

#[op2]
#[serde]
pub fn op_ws_client_info(state: &mut OpState, #[number] id: u64) -> Option<ClientInfo> {
    state.borrow::<IsolateContext>().services.clients.info(id)
}

/// `[status, protocol]`; a client no longer registered is "Closed".
#[op2]
#[serde]
pub fn op_ws_client_state(
    state: &mut OpState,
    #[number] id: u64,
) -> (&'static str, Option<String>) {
    match state.borrow::<IsolateContext>().services.clients.get(id) {
        Some(entry) => (entry.status().as_str(), entry.protocol()),
        None => ("Closed", None),
    }
}

#[op2(fast)]
pub fn op_ws_client_send_text(
    state: &mut OpState,
    #[number] id: u64,
    #[string] text: String,
) -> Result<(), ClientOpError> {
    let clients = &state.borrow::<IsolateContext>().services.clients;
    Ok(clients.send(id, Message::text(text))?)
}

#[op2(fast)]
pub fn op_ws_client_send_binary(
    state: &mut OpState,
    #[number] id: u64,
    #[buffer(copy)] data: bytes::Bytes,
) -> Result<(), ClientOpError> {
    let clients = &state.borrow::<IsolateContext>().services.clients;
    Ok(clients.send(id, Message::binary(data))?)
}

/// Closes a client after what is queued; the code and reason follow the same rule as a
/// connection's (checked by the JS layer first).
#[op2(fast)]
pub fn op_ws_client_close(
    state: &mut OpState,
    #[number] id: u64,
    code: u32,
    #[string] reason: String,
) -> Result<(), ClientOpError> {
    let code = checked_close(code, &reason)?;
    let clients = &state.borrow::<IsolateContext>().services.clients;
    clients.close(id, code, reason);
    Ok(())
}

#[op2]
#[serde]
pub fn op_ws_clients_list(state: &mut OpState) -> Vec<ClientSummary> {
    state.borrow::<IsolateContext>().services.clients.list()
}

#[op2]
#[serde]
pub fn op_ws_client_by_handler(state: &mut OpState, #[string] handler: String) -> Option<u64> {
    state
        .borrow::<IsolateContext>()
        .services
        .clients
        .by_handler(&handler)
}

#[op2(fast)]
pub fn op_ws_client_forget(state: &mut OpState, #[number] id: u64) {
    state.borrow::<IsolateContext>().services.clients.forget(id);
}
