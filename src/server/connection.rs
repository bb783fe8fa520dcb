//! One inbound connection: registered for sending, pumped, and reported to its handler.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::AppState;
use crate::connections::ConnectionId;
use crate::connections::Reservation;
use crate::isolate::{HandlerSlot, IsolateEvent, SocketHome, Target};
use crate::outbox::{outbox, OutboxReader};
use crate::socket::{pump, Incoming, Peer, PumpOptions, TcpUnder};

/// An upgrade that was accepted: the connection is registered (its id is given in the order
/// upgrades are answered, and it can be sent to at once); only its socket is still to come.
pub struct AcceptedUpgrade {
    state: AppState,
    id: ConnectionId,
    queue: OutboxReader,
    endpoint: Arc<str>,
    peer: SocketAddr,
    handler: Arc<HandlerSlot>,
    /// What the endpoint's `onUpgrade` attached, as JSON.
    data: Option<String>,
    /// The connection's place in the connection limits, held until it closes.
    _slot: Reservation,
    /// The handler's isolate thread, when the connection runs there.
    home: Option<SocketHome>,
}

impl AcceptedUpgrade {
    /// Registers the connection, before the upgrade is answered.
    pub fn register(
        state: AppState,
        endpoint: Arc<str>,
        peer: SocketAddr,
        handler: Arc<HandlerSlot>,
        data: Option<String>,
        slot: Reservation,
    ) -> Self {
        let (sender, queue) = outbox(state.limits.send_queue);
        let id = state
            .connections
            .register(endpoint.clone(), peer, data.clone(), sender);
        let home = handler.socket_home();
        if home.as_ref().is_some_and(|home| !home.adopt(id)) {
            let _ = state.connections.close(id, 1001, "handler unloaded".into());
        }
        Self {
            state,
            id,
            queue,
            endpoint,
            peer,
            handler,
            data,
            _slot: slot,
            home,
        }
    }

    /// Where the connection's socket is best driven.
    pub fn home(&self) -> Option<&SocketHome> {
        self.home.as_ref()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The upgrade did not complete: the connection never opened.
    pub fn abandon(self) {
        unregister(&self.state, self.home.as_ref(), self.id);
    }
}

/// Takes a connection out of the registry and out of its isolate's set.
fn unregister(state: &AppState, home: Option<&SocketHome>, id: ConnectionId) {
    state.connections.remove(id);
    if let Some(home) = home {
        home.release(id);
    }
}

/// Serves one upgraded connection until it closes.
pub async fn serve_connection<S>(socket: S, accepted: AcceptedUpgrade)
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + TcpUnder
        + Unpin
        + Send
        + 'static,
{
    let AcceptedUpgrade {
        state,
        id,
        queue,
        endpoint,
        peer,
        handler,
        data,
        _slot,
        home,
    } = accepted;
    let limits = &state.limits;
    let target = Target::Connection(id);
    tracing::debug!(connection = id, %endpoint, %peer, "connection opened");
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
    unregister(&state, home.as_ref(), id);
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
