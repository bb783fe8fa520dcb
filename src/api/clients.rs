//! Outbound clients from JavaScript: `createWebsocket` and the client objects, usable from any
//! isolate since they carry only a client id.

use deno_core::op2;
use deno_core::OpState;
use tokio_tungstenite::tungstenite::Message;

use super::IsolateContext;
use crate::clients::{
    ClientError, ClientInfo, ClientOptions, ClientRequest, ClientSummary, PendingStarts,
};
use crate::workspace::resolve_handler;

/// Registers a client and starts connecting it; returns its id at once.
#[op2(fast)]
#[number]
pub fn op_ws_client_create(
    state: &mut OpState,
    #[string] uri: String,
    #[string] handler: String,
    #[string] options_json: String,
) -> Result<u64, ClientError> {
    let context = state.borrow::<IsolateContext>();
    let options: ClientOptions = if options_json.is_empty() {
        ClientOptions::default()
    } else {
        serde_json::from_str(&options_json)
            .map_err(|e| ClientError::Invalid(format!("options: {e}")))?
    };
    let root = context.resolver.root().to_path_buf();
    let handler_file =
        resolve_handler(handler.trim(), &root).map_err(|e| ClientError::Invalid(e.to_string()))?;
    let request = ClientRequest {
        uri,
        handler: context.resolver.display(&handler_file),
        handler_file,
        creator: context.handler.clone(),
        options,
        workspace_root: root,
    };
    let services = &context.services;
    let (id, start) = services.clients.create(
        request,
        services.isolates.clone(),
        services.network.clone(),
        services.limits.send_queue,
    )?;
    state.borrow_mut::<PendingStarts>().0.push(start);
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
) -> Result<(), ClientError> {
    let clients = &state.borrow::<IsolateContext>().services.clients;
    clients.send(id, Message::text(text))
}

#[op2(fast)]
pub fn op_ws_client_send_binary(
    state: &mut OpState,
    #[number] id: u64,
    #[buffer(copy)] data: bytes::Bytes,
) -> Result<(), ClientError> {
    let clients = &state.borrow::<IsolateContext>().services.clients;
    clients.send(id, Message::binary(data))
}

/// The JS layer has validated the code and reason.
#[op2(fast)]
pub fn op_ws_client_close(
    state: &mut OpState,
    #[number] id: u64,
    code: u32,
    #[string] reason: String,
) {
    let clients = &state.borrow::<IsolateContext>().services.clients;
    clients.close(id, code.clamp(1000, 4999) as u16, reason);
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
