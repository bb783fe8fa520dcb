//! HTTP and WebSocket serving: routing an upgrade to its endpoint, the endpoint listing, the
//! projects' static pages, and the accept loop with graceful shutdown.

mod connection;
mod metrics;
mod pages;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::clients::ClientRegistry;
use crate::connections::ConnectionRegistry;
use crate::isolate::IsolateHost;
use crate::workspace::EndpointRegistry;

pub use connection::serve_connection;
pub use upgrade::websocket_config;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The workspace root, canonical: static files are served from its projects.
    pub workspace_root: PathBuf,
    /// What is served.
    pub endpoints: Arc<EndpointRegistry>,
    /// Where connections are registered for sending and listing.
    pub connections: Arc<ConnectionRegistry>,
    /// Outbound clients created by handlers.
    pub clients: Arc<ClientRegistry>,
    /// The handler isolates.
    pub isolates: Arc<IsolateHost>,
    /// Workspace changes applied since start, for `/metrics`.
    pub reloads: Arc<std::sync::atomic::AtomicU64>,
}

/// The routes: WebSocket upgrades at Dirigible's paths, listings, and project pages.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/metrics", get(metrics::metrics))
        .route("/switchboard/status", get(pages::status))
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

/// Serves until `shutdown` resolves, then stops accepting and waits for open requests.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
