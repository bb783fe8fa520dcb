//! The ops behind the JavaScript API (`runtime_js/`): one file per concern, one extension.

mod connection;
mod console;
mod modules;

use std::sync::Arc;

use crate::connections::ConnectionRegistry;
use crate::isolate::modules::WorkspaceResolver;

/// What the ops of one isolate need, kept in its `OpState`.
pub struct IsolateContext {
    /// The handler module this isolate runs, as shown in logs (`my-project/ws-handler.js`).
    pub handler: String,
    /// Resolves `require()` calls inside the workspace.
    pub resolver: WorkspaceResolver,
    /// Where `send` and `close` find the connections.
    pub connections: Arc<ConnectionRegistry>,
}

deno_core::extension!(
    switchboard_api,
    ops = [
        console::op_sb_log,
        modules::op_sb_read_module,
        connection::op_ws_send_text,
        connection::op_ws_send_binary,
        connection::op_ws_close,
    ],
    options = { context: IsolateContext },
    state = |state, options| {
        state.put(options.context);
    },
);
