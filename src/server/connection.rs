//! One inbound connection: registered for sending, pumped, and reported to its handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use super::state::AppState;
use crate::event::{ConnectionId, EventSink, IsolateEvent, Target};
use crate::isolate::InstanceSink;
use crate::net::compression::socket::SocketCompression;
use crate::net::connections::Reservation;
use crate::net::home::SocketHome;
use crate::net::outbox::{outbox, OutboxReader};
use crate::net::pump::{pump, Peer, PumpOptions, PumpedSocket};
use crate::stats::Traffic;

/// An upgrade that was accepted: the connection is registered (its id is given in the order
/// upgrades are answered, and it can be sent to at once); only its socket is still to come.
pub struct AcceptedUpgrade {
    /// The server's state.
    state: AppState,
    /// The connection's id.
    id: ConnectionId,
    /// What its pump writes.
    queue: OutboxReader,
    /// The endpoint it was upgraded on.
    endpoint: Arc<str>,
    /// The peer's address.
    peer: SocketAddr,
    /// The instance of the endpoint's handler the connection was given to: it gets its events.
    handler: InstanceSink,
    /// What the endpoint's `onUpgrade` attached, as JSON.
    data: Option<String>,
    /// The connection's place in the connection limits, held until it closes.
    _slot: Reservation,
    /// The thread of the handler's instance, where the connection runs.
    home: SocketHome,
    /// permessage-deflate, when it was agreed.
    compression: Option<Arc<SocketCompression>>,
}

impl AcceptedUpgrade {
    /// Registers the connection, before the upgrade is answered.
    pub fn register(
        state: AppState,
        endpoint: Arc<str>,
        peer: SocketAddr,
        handler: InstanceSink,
        data: Option<String>,
        slot: Reservation,
        compression: Option<Arc<SocketCompression>>,
    ) -> Self {
        let connections = &state.runtime.connections;
        let (sender, queue) = outbox(state.runtime.limits.send_queue);
        let id = connections.register(endpoint.clone(), peer, data.clone(), sender);
        let home = handler.socket_home().clone();
        if !home.adopt(id) {
            let _ = connections.close(id, 1001, "handler unloaded".into());
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
            compression,
        }
    }

    /// Where the connection's socket is driven.
    pub fn home(&self) -> &SocketHome {
        &self.home
    }

    /// The endpoint it was upgraded on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The upgrade did not complete: the connection never opened.
    pub fn abandon(self) {
        unregister(&self.state, Some(&self.home), self.id);
    }
}

/// Takes a connection out of the registry and out of its isolate's set.
fn unregister(state: &AppState, home: Option<&SocketHome>, id: ConnectionId) {
    state.runtime.connections.remove(id);
    if let Some(home) = home {
        home.release(id);
    }
}

/// Serves one upgraded connection until it closes.
///
/// The returned future is the connection's task for its whole life, held at its largest state
/// by every idle connection, so it holds each thing once: the upgrade comes boxed (one word in
/// the task that awaits this) and is taken apart here, before the future is made; the socket is
/// lent to the pump, not moved into it. (An `async fn` keeps its arguments twice: as given and
/// as locals; bench: idle memory.)
pub fn serve_connection<S>(
    mut socket: S,
    accepted: Box<AcceptedUpgrade>,
) -> impl Future<Output = ()> + Send
where
    S: PumpedSocket,
{
    let AcceptedUpgrade {
        state,
        id,
        queue,
        endpoint,
        peer,
        handler,
        data,
        _slot: slot,
        home,
        compression,
    } = *accepted;
    async move {
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
                .runtime
                .connections
                .close(id, 1011, "handler unavailable".into());
        }
        let address = peer.to_string();
        let traffic = Arc::new(Traffic::within(state.runtime.stats.endpoint(&endpoint)));
        state.runtime.connections.count_traffic(id, traffic.clone());
        let limits = &state.runtime.limits;
        let ending = pump(
            &mut socket,
            queue,
            &handler,
            Peer {
                target,
                name: &endpoint,
                address: &address,
            },
            PumpOptions {
                keepalive: limits
                    .ping_interval
                    .map(|every| (every, limits.pong_timeout)),
                traffic,
                compression,
            },
            || {},
        )
        .await;
        unregister(&state, Some(&home), id);
        tracing::debug!(connection = id, %endpoint, %peer, code = ending.code, "connection closed");
        let _ = handler
            .deliver(ending.into_event(target, Some(endpoint.clone())))
            .await;
        // The connection's place in the limits is held until here.
        drop(slot);
    }
}
