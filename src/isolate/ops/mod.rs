//! The ops behind the JavaScript API (`runtime_js/`): one file per concern, one extension. Ops sit
//! below the rest of `isolate/`: they reach the runtime only through the [`Services`] and
//! [`IsolateContext`] put in each isolate's `OpState` (`context`), never the isolate's own
//! machinery.

mod answers;
mod bootstrap;
mod clients;
mod connection;
mod console;
mod context;
mod control;
mod modules;
mod nodes;

pub use answers::{await_request, await_service_call, await_upgrade_decision, fail_request};
pub use clients::start_pending_clients;
pub use context::{ClientHandlers, HandlerFeatures, IsolateContext, NoClientHandlers, Services};
pub use modules::{resolve_module, ModuleOpError, ResolvedModule, COMMONJS_PREFIX};

deno_core::extension!(
    switchboard_api,
    ops = [
        bootstrap::op_sb_event_kinds,
        bootstrap::op_sb_builtin_modules,
        console::op_sb_log,
        console::op_sb_count_error,
        console::op_sb_error_location,
        modules::op_sb_read_module,
        modules::op_sb_handler_exports,
        answers::op_ws_upgrade_decide,
        answers::op_sb_service_done,
        answers::op_sb_request_answer,
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
        nodes::op_ws_nodes,
        nodes::op_ws_all_connections,
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
