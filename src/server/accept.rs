//! The accept loop: one task per TCP connection (after its TLS handshake, if any), each an
//! HTTP/1.1 connection with upgrades; accept errors back off instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::routes::router;
use super::shutdown::shut_down;
use super::state::AppState;
use super::trim::give_back_memory_after_storms;

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
    let header_timeout = state.runtime.limits.header_timeout;
    let trimming = tokio::spawn(give_back_memory_after_storms(state.runtime.clone()));
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
                Some(acceptor) => {
                    // A TLS handshake that never completes is bounded like a request's headers.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_http(stream, peer, router, header_timeout).await,
                        Ok(Err(error)) => tracing::debug!(%peer, "TLS handshake failed: {error}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_http(stream, peer, router, header_timeout).await,
            }
        });
    }
    drop(listener);
    trimming.abort();
    shut_down(&state).await;
    Ok(())
}

/// One HTTP/1.1 connection, with upgrades. A client that does not send a request's headers within
/// `header_timeout` of the server waiting for them (silent from the start, or idle between
/// requests) is disconnected.
async fn serve_http<S>(stream: S, peer: SocketAddr, router: Router, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, "HTTP connection ended: {error}");
    }
}
