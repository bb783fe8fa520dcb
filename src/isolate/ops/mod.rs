//! The ops behind the JavaScript API (`runtime_js/`): one file per concern, one extension. Ops sit
//! below the rest of `isolate/`: they reach the runtime only through the [`Services`] and
//! [`IsolateContext`] put in each isolate's `OpState`, never the isolate's own machinery.

mod answers;
mod bootstrap;
mod clients;
mod connection;
mod console;
mod control;
mod modules;

use std::sync::{Arc, Weak};

pub use answers::{await_service_call, await_upgrade_decision};
pub use clients::{start_pending_clients, ClientHandlers, NoClientHandlers};
pub use modules::{resolve_module, HandlerFeatures, ModuleOpError, ResolvedModule};

use crate::limits::Limits;
use crate::net::clients::ClientRegistry;
use crate::net::connections::ConnectionRegistry;
use crate::stats::Stats;
use crate::workspace::modules::ModuleFiles;

/// The runtime-wide services that an isolate's ops reach.
#[derive(Debug, Clone)]
pub struct Services {
    /// Inbound connections, for `conn.send` and `conn.close`.
    pub connections: Arc<ConnectionRegistry>,
    /// Outbound clients.
    pub clients: Arc<ClientRegistry>,
    /// Runs a new client once its handler's isolate runs (the isolate host).
    pub client_handlers: Weak<dyn ClientHandlers>,
    /// Limits on queues, events and heaps.
    pub limits: Arc<Limits>,
    /// Counters for `/metrics`.
    pub stats: Arc<Stats>,
}

/// What the ops of one isolate need, kept in its `OpState`.
pub struct IsolateContext {
    /// The handler module this isolate runs, as shown in logs (`my-project/ws-handler.js`).
    pub handler: String,
    /// Resolves and reads `require()`d modules inside the workspace, recording what was read.
    pub modules: ModuleFiles,
    /// Connections, clients, limits and counters.
    pub services: Services,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
}

deno_core::extension!(
    switchboard_api,
    ops = [
        bootstrap::op_sb_event_kinds,
        bootstrap::op_sb_builtin_modules,
        console::op_sb_log,
        console::op_sb_count_error,
        modules::op_sb_read_module,
        modules::op_sb_handler_exports,
        answers::op_ws_upgrade_decide,
        answers::op_sb_service_done,
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
        state.put(clients::PendingClients::default());
        state.put(answers::PendingAnswers::default());
    },
);
