//! The ops behind the JavaScript API (`runtime_js/`): one file per concern, one extension.

mod clients;
mod connection;
mod console;
mod control;
mod modules;
mod upgrade;

pub use upgrade::{await_service_call, await_upgrade_decision};

use crate::isolate::modules::WorkspaceResolver;
use crate::isolate::Services;

/// What the ops of one isolate need, kept in its `OpState`.
pub struct IsolateContext {
    /// The handler module this isolate runs, as shown in logs (`my-project/ws-handler.js`).
    pub handler: String,
    /// Resolves `require()` calls inside the workspace.
    pub resolver: WorkspaceResolver,
    /// Connections, clients, the network runtime and the other isolates.
    pub services: Services,
    /// Where the handler's optional exports are recorded.
    pub features: std::sync::Arc<crate::isolate::HandlerFeatures>,
}

deno_core::extension!(
    switchboard_api,
    ops = [
        console::op_sb_log,
        console::op_sb_count_error,
        modules::op_sb_read_module,
        modules::op_sb_handler_exports,
        upgrade::op_ws_upgrade_decide,
        upgrade::op_sb_service_done,
        control::op_ws_connections_list,
        control::op_ws_connection_info,
        control::op_ws_broadcast_text,
        control::op_ws_broadcast_binary,
        control::op_ws_subscribe,
        control::op_ws_unsubscribe,
        control::op_ws_publish_text,
        control::op_ws_publish_binary,
        connection::op_ws_send_text,
        connection::op_ws_send_binary,
        connection::op_ws_close,
        connection::op_ws_connection_endpoint,
        clients::op_ws_client_create,
        clients::op_ws_client_info,
        clients::op_ws_client_state,
        clients::op_ws_client_send_text,
        clients::op_ws_client_send_binary,
        clients::op_ws_client_close,
        clients::op_ws_clients_list,
        clients::op_ws_client_by_handler,
        clients::op_ws_client_forget,
    ],
    options = { context: IsolateContext },
    state = |state, options| {
        state.put(options.context);
        state.put(crate::clients::PendingStarts::default());
        state.put(upgrade::PendingAnswers::default());
    },
);

/// Starts the clients that the isolate's last turn of JavaScript created.
pub fn start_pending_clients(state: &mut deno_core::OpState) {
    let pending = std::mem::take(&mut state.borrow_mut::<crate::clients::PendingStarts>().0);
    for start in pending {
        start.start();
    }
}
