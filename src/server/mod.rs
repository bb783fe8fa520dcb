//! HTTP and WebSocket serving: routing an upgrade to its endpoint, the endpoint listing, the
//! projects' static pages, the accept loop (plain or TLS), and graceful shutdown.

mod connection;
mod metrics;
mod pages;
mod tls;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::clients::ClientRegistry;
use crate::connections::ConnectionRegistry;
use crate::isolate::IsolateHost;
use crate::lifecycle::Lifecycle;
use crate::limits::Limits;
use crate::stats::Stats;
use crate::workspace::EndpointRegistry;

pub use connection::{serve_connection, AcceptedUpgrade};
pub use metrics::resident_memory_bytes;
pub use tls::{load_server_tls, TlsError};
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
    pub reloads: Arc<AtomicU64>,
    /// Limits and timeouts.
    pub limits: Arc<Limits>,
    /// Counters for `/metrics`.
    pub stats: Arc<Stats>,
    /// Set once shutdown has begun: new upgrades are refused.
    pub shutting_down: Arc<AtomicBool>,
    /// The WebSocket connection tasks, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// onStart/onTick/onStop of the bound endpoints.
    pub lifecycle: Arc<Lifecycle>,
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

/// Serves until `shutdown` resolves, then shuts down gracefully: no new connections; every open
/// connection gets 1001 "server shutting down" after the messages already queued for it; outbound
/// clients are closed; handlers run their `onClose`; all within the shutdown timeout.
pub async fn run(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(state.clone());
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(50);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(50);
                accepted
            }
            Err(error) => {
                // Out of file descriptors and the like: wait, rather than spin on the error.
                tracing::warn!("accepting a connection failed: {error}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_http(stream, peer, router).await,
                    Err(error) => tracing::debug!(%peer, "TLS handshake failed: {error}"),
                },
                None => serve_http(stream, peer, router).await,
            }
        });
    }
    drop(listener);
    shut_down(&state).await;
    Ok(())
}

/// One HTTP/1.1 connection, with upgrades.
async fn serve_http<S>(stream: S, peer: SocketAddr, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, "HTTP connection ended: {error}");
    }
}

async fn shut_down(state: &AppState) {
    let started = Instant::now();
    let deadline = started + state.limits.shutdown_timeout;
    state.shutting_down.store(true, Ordering::SeqCst);
    let connections = state.connections.close_all(1001, "server shutting down");
    let clients = state.clients.close_all(1001, "server shutting down");
    tracing::info!(
        "shutting down: closing {connections} connection(s) and {clients} client(s) (at most {} s)",
        state.limits.shutdown_timeout.as_secs_f64()
    );
    state.tasks.close();
    let remaining = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(remaining(deadline), state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some connections did not close in time");
    }
    let _ = tokio::time::timeout(remaining(deadline), state.clients.until_all_finished()).await;
    let _ = tokio::time::timeout(remaining(deadline), state.lifecycle.unbind_all()).await;
    // Handlers run the onClose events already queued, then their isolates stop.
    state.isolates.shutdown(remaining(deadline)).await;
    tracing::info!("shut down in {} ms", started.elapsed().as_millis());
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
    tracing::info!("signal received");
}
