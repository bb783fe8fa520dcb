//! HTTP and WebSocket serving: the accept loop (plain or TLS), routing, upgrades to endpoints,
//! one connection's life, the listings and projects' pages, `/metrics`, and graceful shutdown.

mod accept;
mod connection;
mod metrics;
mod pages;
mod shutdown;
mod tls;
mod upgrade;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio_util::task::TaskTracker;

use crate::endpoints::Runtime;

pub use accept::run;
pub use metrics::resident_memory_bytes;
pub use shutdown::shutdown_signal;
pub use tls::{load_server_tls, TlsError};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The running Switchboard: what is served, who is connected, the isolates.
    pub runtime: Arc<Runtime>,
    /// Set once shutdown has begun: new upgrades are refused.
    pub shutting_down: Arc<AtomicBool>,
    /// The WebSocket connection tasks, so that shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl AppState {
    /// The server's state over `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            runtime,
            shutting_down: Default::default(),
            tasks: Default::default(),
        }
    }
}

/// The routes: WebSocket upgrades at Dirigible's paths, listings, and project pages.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/metrics", get(metrics::metrics))
        .route("/switchboard/status", get(pages::status))
        .route("/switchboard/client.js", get(pages::client_library))
        .route("/websockets/v4/service", get(pages::endpoint_list))
        .route("/websockets/v4/service/", get(pages::endpoint_list))
        .route("/websockets/v4/service/{endpoint}", get(upgrade::upgrade))
        .route("/websockets/service/{endpoint}", get(upgrade::upgrade))
        .route("/services/web/{project}", get(pages::project_root))
        .route("/services/web/{project}/", get(pages::project_root))
        .route("/services/web/{project}/{*path}", get(pages::static_file))
        .fallback(pages::not_found)
        .with_state(state)
}
