//! A STOMP session's link to an endpoint: beyond Dirigible, a session that subscribes to
//! `/user/queue/reply/{endpoint}` becomes a connection of that endpoint like any other. Its
//! handler hears `onOpen` then, and `onClose` exactly once (UNSUBSCRIBE, DISCONNECT, the socket
//! lost); `getConnections()` lists it; `conn.send`, `send(id)` and `broadcast` reach it as a
//! MESSAGE on the reply destination; `disconnect` and `conn.close` close the session.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::super::state::AppState;
use super::outlet::{Body, Outlet};
use super::replies::envelope;
use crate::event::{ConnectionId, IsolateEvent, Target};
use crate::isolate::HandlerSlot;
use crate::net::connections::Reservation;
use crate::net::outbox::{outbox, Outbound, OutboxReader, Taken};
use crate::net::pump::Ending;

/// The reply destination of an endpoint, to which a subscription links a session.
pub fn reply_destination(endpoint: &str) -> String {
    format!("/user/queue/reply/{endpoint}")
}

/// The error destination of an endpoint.
pub fn error_destination(endpoint: &str) -> String {
    format!("/user/queue/errors/{endpoint}")
}

/// An open link: the session's connection of one endpoint.
#[derive(Debug)]
pub struct Link {
    /// The connection's id.
    pub connection: ConnectionId,
    /// The subscription that opened it.
    pub subscription: String,
    /// The endpoint's handler.
    pub handler: Arc<HandlerSlot>,
    /// Which of its instances the connection's events go to (the session's number, see
    /// [`HandlerSlot::deliver_spread`]).
    spread: usize,
    /// The connection's place in the limits, held while it is open.
    _slot: Reservation,
}

/// What opening a link needs.
pub struct LinkRequest<'a> {
    /// The endpoint.
    pub endpoint: Arc<str>,
    /// Its handler.
    pub handler: Arc<HandlerSlot>,
    /// Which of its instances the session uses.
    pub spread: usize,
    /// The subscription opening it.
    pub subscription: &'a str,
    /// Its place in the limits, reserved.
    pub slot: Reservation,
    /// What `onUpgrade` attached, as JSON.
    pub data: Option<String>,
    /// The session's peer.
    pub peer: SocketAddr,
}

/// Registers the connection, tells its handler (`onOpen`) and starts carrying what is sent to it
/// into the session as MESSAGE frames.
pub async fn open(state: &AppState, outlet: &Arc<Outlet>, request: LinkRequest<'_>) -> Link {
    let (sender, reader) = outbox(state.runtime.limits.send_queue);
    let id = state.runtime.connections.register(
        request.endpoint.clone(),
        request.peer,
        request.data.clone(),
        sender,
    );
    let _ = request
        .handler
        .deliver_spread(
            request.spread,
            IsolateEvent::Open {
                target: Target::Connection(id),
                endpoint: Some(request.endpoint.clone()),
                protocol: None,
                data: request.data,
            },
        )
        .await;
    tokio::spawn(carry(
        reader,
        outlet.clone(),
        request.endpoint,
        request.subscription.to_string(),
    ));
    Link {
        connection: id,
        subscription: request.subscription.to_string(),
        handler: request.handler,
        spread: request.spread,
        _slot: request.slot,
    }
}

/// Ends a link: the connection leaves the registry (which ends its carrier) and its handler
/// hears `onClose`.
pub async fn close(state: &AppState, endpoint: Arc<str>, link: Link, ending: Ending) {
    state.runtime.connections.remove(link.connection);
    let target = Target::Connection(link.connection);
    let _ = link
        .handler
        .deliver_spread(link.spread, ending.into_event(target, Some(endpoint)))
        .await;
}

/// Carries what handlers send to the connection into the session: text as Dirigible's reply
/// envelope (`{"from": endpoint, "text", "time"}`, as pages render replies), bytes as they are.
/// A close of the connection (`conn.close`, `disconnect`, shutdown) closes the session.
async fn carry(
    reader: OutboxReader,
    outlet: Arc<Outlet>,
    endpoint: Arc<str>,
    subscription: String,
) {
    let destination = reply_destination(&endpoint);
    loop {
        let items = match poll_fn(|cx| reader.poll_take(cx)).await {
            Taken::Batch(items) => items,
            Taken::CloseNow(code, reason, _) => {
                outlet.fail(&closed_by_handler(&endpoint, code, &reason), code);
                return;
            }
            Taken::SenderGone => return,
        };
        for item in items {
            let sent = match item {
                Outbound::Message(Message::Text(text)) => outlet.message(
                    &destination,
                    &subscription,
                    "application/json",
                    Body::Text(&envelope(&endpoint, text.as_str())),
                ),
                Outbound::Message(Message::Binary(data)) => outlet.message(
                    &destination,
                    &subscription,
                    "application/octet-stream",
                    Body::Bytes(&data),
                ),
                Outbound::Message(_) | Outbound::Raw(_) => Ok(()),
                Outbound::Close { code, reason } => {
                    outlet.fail(&closed_by_handler(&endpoint, code, &reason), code);
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// The ERROR message when an endpoint's handler closes its connection.
fn closed_by_handler(endpoint: &str, code: u16, reason: &str) -> String {
    if reason.is_empty() {
        format!("endpoint {endpoint} closed the connection ({code})")
    } else {
        format!("endpoint {endpoint} closed the connection ({code}): {reason}")
    }
}
