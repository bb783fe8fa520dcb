//! One inbound connection: registered for sending, pumped, and reported to its handler.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connections::{CloseSignal, ConnectionRegistry, DEFAULT_SEND_QUEUE};
use crate::isolate::{HandlerSlot, IsolateEvent, Target};
use crate::socket::{pump, Incoming, Peer};

/// Serves one upgraded connection until it closes.
pub async fn serve_connection<S>(
    socket: S,
    endpoint: Arc<str>,
    peer: SocketAddr,
    isolate: Arc<HandlerSlot>,
    connections: Arc<ConnectionRegistry>,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + 'static,
{
    let (outbound, queue) = mpsc::channel(DEFAULT_SEND_QUEUE);
    let close_signal = Arc::new(CloseSignal::default());
    let id = connections.register(endpoint.clone(), peer, outbound, close_signal.clone());
    let target = Target::Connection(id);
    tracing::debug!(connection = id, %endpoint, %peer, "connection opened");
    if isolate
        .deliver(IsolateEvent::Open {
            target,
            endpoint: Some(endpoint.clone()),
            protocol: None,
        })
        .await
        .is_err()
    {
        close_signal.request(1011, "handler unavailable".into());
    }
    let address = peer.to_string();
    let ending = pump(
        socket,
        queue,
        close_signal,
        &isolate,
        Peer {
            kind: "connection",
            id,
            name: &endpoint,
            address: &address,
        },
        |incoming| match incoming {
            Incoming::Text(text) => IsolateEvent::Text { target, text },
            Incoming::Binary(data) => IsolateEvent::Binary { target, data },
            Incoming::Error(message) => IsolateEvent::Error { target, message },
        },
        || {},
    )
    .await;
    connections.remove(id);
    tracing::debug!(connection = id, %endpoint, %peer, code = ending.code, "connection closed");
    let _ = isolate
        .deliver(IsolateEvent::Close {
            target,
            code: ending.code,
            reason: ending.reason,
            was_clean: ending.was_clean,
            endpoint: Some(endpoint.clone()),
        })
        .await;
}
