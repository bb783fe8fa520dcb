//! One inbound connection: registered for sending, pumped, and reported to its handler.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::AppState;
use crate::connections::Reservation;
use crate::isolate::{HandlerSlot, IsolateEvent, SocketHome, Target};
use crate::outbox::outbox;
use crate::socket::{pump, Incoming, Peer, PumpOptions};

/// An upgrade that was accepted: everything its connection needs but the socket.
pub struct AcceptedUpgrade {
    pub state: AppState,
    pub endpoint: Arc<str>,
    pub peer: SocketAddr,
    pub handler: Arc<HandlerSlot>,
    /// What the endpoint's `onUpgrade` attached, as JSON.
    pub data: Option<String>,
    /// The connection's place in the connection limits, held until it closes.
    pub slot: Reservation,
    /// The handler's isolate thread, when the connection runs there.
    pub home: Option<SocketHome>,
}

/// Serves one upgraded connection until it closes.
pub async fn serve_connection<S>(socket: S, accepted: AcceptedUpgrade)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + 'static,
{
    let AcceptedUpgrade {
        state,
        endpoint,
        peer,
        handler,
        data,
        slot: _slot,
        home,
    } = accepted;
    let limits = &state.limits;
    let (sender, queue) = outbox(limits.send_queue);
    let id = state
        .connections
        .register(endpoint.clone(), peer, data.clone(), sender);
    let target = Target::Connection(id);
    tracing::debug!(connection = id, %endpoint, %peer, "connection opened");
    if home.as_ref().is_some_and(|home| !home.adopt(id)) {
        let _ = state.connections.close(id, 1001, "handler unloaded".into());
    }
    if handler
        .deliver(IsolateEvent::Open {
            target,
            endpoint: Some(endpoint.clone()),
            protocol: None,
            data,
        })
        .await
        .is_err()
    {
        let _ = state
            .connections
            .close(id, 1011, "handler unavailable".into());
    }
    let address = peer.to_string();
    let ending = pump(
        socket,
        queue,
        &handler,
        Peer {
            kind: "connection",
            id,
            name: &endpoint,
            address: &address,
        },
        PumpOptions {
            keepalive: limits
                .ping_interval
                .map(|every| (every, limits.pong_timeout)),
            traffic: state.stats.endpoint(&endpoint),
        },
        |incoming| match incoming {
            Incoming::Text(text) => IsolateEvent::Text { target, text },
            Incoming::Binary(data) => IsolateEvent::Binary { target, data },
            Incoming::Error(message) => IsolateEvent::Error { target, message },
        },
        || {},
    )
    .await;
    if let Some(home) = &home {
        home.release(id);
    }
    state.connections.remove(id);
    tracing::debug!(connection = id, %endpoint, %peer, code = ending.code, "connection closed");
    let _ = handler
        .deliver(IsolateEvent::Close {
            target,
            code: ending.code,
            reason: ending.reason,
            was_clean: ending.was_clean,
            endpoint: Some(endpoint.clone()),
        })
        .await;
}
