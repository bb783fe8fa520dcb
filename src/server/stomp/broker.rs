//! The broker's side of STOMP, as Dirigible's (Spring's simple broker) does it: subscriptions to
//! `/topic/...` and `/queue/...` destinations, each SEND to one reaching every subscriber. A
//! `/topic/{topic}` is also the raw connections' topic `{topic}`: `publish(topic)` from a handler
//! reaches STOMP subscribers (the broker is the connection registry's [`TopicRelay`]). Also the
//! list of open sessions, for shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio_tungstenite::tungstenite::Message;

use super::outlet::{Body, Outlet};
use crate::net::connections::TopicRelay;

/// The prefix of destinations shared with raw connections' topics.
pub const TOPIC_PREFIX: &str = "/topic/";

/// Whether SENDs to `destination` go to its subscribers (Dirigible's broker prefixes).
pub fn is_broker_destination(destination: &str) -> bool {
    (destination.starts_with(TOPIC_PREFIX) && destination.len() > TOPIC_PREFIX.len())
        || (destination.starts_with("/queue/") && destination.len() > "/queue/".len())
}

/// One subscription to a broker destination.
#[derive(Debug, Clone)]
struct Subscriber {
    /// The session's outlet.
    outlet: Arc<Outlet>,
    /// The subscription's id in that session.
    subscription: String,
}

/// STOMP sessions and their broker subscriptions.
#[derive(Debug, Default)]
pub struct StompBroker {
    /// The last session number given.
    sessions_opened: AtomicU64,
    /// Open sessions, by number.
    sessions: Mutex<HashMap<u64, Arc<Outlet>>>,
    /// Subscribers of each destination.
    destinations: RwLock<HashMap<String, Vec<Subscriber>>>,
}

impl StompBroker {
    /// A number for a new session.
    pub fn next_session(&self) -> u64 {
        self.sessions_opened.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A session opened.
    pub fn opened(&self, outlet: Arc<Outlet>) {
        self.sessions.lock().insert(outlet.session, outlet);
    }

    /// A session ended: it leaves every destination. Returns the destinations of the
    /// subscriptions it had (one per subscription).
    pub fn closed(&self, session: u64) -> Vec<String> {
        self.sessions.lock().remove(&session);
        let mut left = Vec::new();
        self.destinations
            .write()
            .retain(|destination, subscribers| {
                subscribers.retain(|s| {
                    let leaving = s.outlet.session == session;
                    if leaving {
                        left.push(destination.clone());
                    }
                    !leaving
                });
                !subscribers.is_empty()
            });
        left
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes a session to `destination`.
    pub fn subscribe(&self, destination: &str, outlet: &Arc<Outlet>, subscription: &str) {
        self.destinations
            .write()
            .entry(destination.to_string())
            .or_default()
            .push(Subscriber {
                outlet: outlet.clone(),
                subscription: subscription.to_string(),
            });
    }

    /// Ends subscription `subscription` of session `session`; returns its destination.
    pub fn unsubscribe(&self, session: u64, subscription: &str) -> Option<String> {
        let mut left = None;
        self.destinations
            .write()
            .retain(|destination, subscribers| {
                subscribers.retain(|s| {
                    let leaving = s.outlet.session == session && s.subscription == subscription;
                    if leaving {
                        left = Some(destination.clone());
                    }
                    !leaving
                });
                !subscribers.is_empty()
            });
        left
    }

    /// Sends `body` to every subscriber of `destination`; returns how many got it.
    pub fn deliver(&self, destination: &str, content_type: &str, body: Body<'_>) -> usize {
        let destinations = self.destinations.read();
        let Some(subscribers) = destinations.get(destination) else {
            return 0;
        };
        subscribers
            .iter()
            .filter(|s| {
                s.outlet
                    .message(destination, &s.subscription, content_type, body)
                    .is_ok()
            })
            .count()
    }

    /// Closes every session (shutdown); returns how many there were.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let sessions: Vec<Arc<Outlet>> = self.sessions.lock().values().cloned().collect();
        for outlet in &sessions {
            outlet.close(code, reason);
        }
        sessions.len()
    }
}

impl TopicRelay for StompBroker {
    fn publish(&self, topic: &str, message: &Message) -> usize {
        let destination = format!("{TOPIC_PREFIX}{topic}");
        match message {
            Message::Text(text) => {
                self.deliver(&destination, "text/plain;charset=UTF-8", Body::Text(text))
            }
            Message::Binary(data) => {
                self.deliver(&destination, "application/octet-stream", Body::Bytes(data))
            }
            _ => 0,
        }
    }
}
