//! Keeps a node linked to the broker for as long as it runs: connect, renew the node number's
//! claim, subscribe to what the node wants, announce it, publish what is queued with a heartbeat
//! between, and when anything fails: say so once, serve local connections only, reconnect with
//! backoff, and do it all again (re-subscribe, re-announce). Written once for every broker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::broker::{Broker, BrokerConnection, BrokerError, Inbox, Publisher};
use super::members::HEARTBEAT;
use super::{Cluster, NODE_LEASE};
use std::sync::atomic::Ordering;

/// The first wait before reconnecting; each failure doubles it, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How many queued envelopes go to the broker in one round trip, at most.
const BATCH: usize = 256;

/// Runs the link until the node leaves. `first` is the connection made at start, if any.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    broker: Arc<dyn Broker>,
    mut outgoing: mpsc::Receiver<(Arc<str>, Bytes)>,
    mut first: Option<BrokerConnection>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut ever_up = false;
    // Whether the current outage was logged (one line per outage, not one per attempt).
    let mut outage_reported = first.is_none();
    let leaving = cluster.leaving.notified();
    tokio::pin!(leaving);
    loop {
        let connection = match first.take() {
            Some(connection) => Ok(connection),
            None => {
                tokio::select! {
                    connection = broker.connect() => connection,
                    () = &mut leaving => return cluster.left.notify_one(),
                }
            }
        };
        match connection {
            Ok(connection) => {
                let outcome = tokio::select! {
                    error = serve(&cluster, connection, &mut outgoing, ever_up, outage_reported) => Some(error),
                    () = &mut leaving => None,
                };
                let Some(error) = outcome else {
                    // serve() is dropped mid-way; say bye on a fresh connection if one comes.
                    say_bye(&cluster, &*broker).await;
                    return cluster.left.notify_one();
                };
                ever_up = true;
                cluster.went_down();
                // What was queued would arrive late or not at all: drop it (at most once).
                let mut dropped = 0;
                while outgoing.try_recv().is_ok() {
                    dropped += 1;
                }
                cluster
                    .stats
                    .broker
                    .dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                tracing::warn!(
                    "{error}; the link to the other nodes is down: this node serves its own \
                     connections only and reconnects"
                );
                outage_reported = true;
                backoff = BACKOFF_MIN;
            }
            Err(error) => {
                if !outage_reported {
                    tracing::warn!(
                        "{error}; this node serves its own connections only and keeps trying"
                    );
                    outage_reported = true;
                } else {
                    tracing::debug!("broker still unreachable: {error}");
                }
            }
        }
        let jitter = Duration::from_millis(super::random() % 100);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = &mut leaving => return cluster.left.notify_one(),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: returns why it ended.
async fn serve(
    cluster: &Arc<Cluster>,
    connection: BrokerConnection,
    outgoing: &mut mpsc::Receiver<(Arc<str>, Bytes)>,
    reconnected: bool,
    after_outage: bool,
) -> BrokerError {
    let BrokerConnection {
        mut publisher,
        subscriber,
    } = connection;
    let claim = format!("{}{}", cluster.channels.claim, cluster.node);
    match publisher.claim(&claim, &cluster.instance, NODE_LEASE).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            "node number {} is held by another node now (this one was away longer than its \
             {} s claim): connection ids of the two may collide; restart this node",
            cluster.node,
            NODE_LEASE.as_secs()
        ),
        Err(error) => return error,
    }
    let inbox: Arc<dyn Inbox> = cluster.clone();
    let subscribed = subscriber.run(cluster.wanted.clone(), inbox);
    tokio::pin!(subscribed);
    cluster.went_up(reconnected);
    if let Err(error) = publisher
        .publish(&[(cluster.channels.control.clone(), cluster.hello(true))])
        .await
    {
        return error;
    }
    if after_outage || reconnected {
        tracing::info!(
            "broker reachable again: node {} re-subscribed and announced itself",
            cluster.node
        );
    } else {
        tracing::info!("node {} joined the others through the broker", cluster.node);
    }
    tokio::select! {
        error = &mut subscribed => error,
        error = publish(cluster, &mut *publisher, outgoing, &claim) => error,
    }
}

/// Publishes what is queued, in batches, with a heartbeat (and the claim renewed, and silent
/// nodes forgotten) every [`HEARTBEAT`].
async fn publish(
    cluster: &Arc<Cluster>,
    publisher: &mut dyn Publisher,
    outgoing: &mut mpsc::Receiver<(Arc<str>, Bytes)>,
    claim: &str,
) -> BrokerError {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = outgoing.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return BrokerError("the node is stopping".into());
                }
                if let Err(error) = publisher.publish(&batch).await {
                    return error;
                }
                cluster
                    .stats
                    .broker
                    .messages_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
            _ = heartbeat.tick() => {
                let beat = [(cluster.channels.control.clone(), cluster.heartbeat())];
                if let Err(error) = publisher.publish(&beat).await {
                    return error;
                }
                if let Err(error) = publisher.claim(claim, &cluster.instance, NODE_LEASE).await {
                    return error;
                }
                cluster.sweep();
            }
        }
    }
}

/// Says bye on a connection of its own (the link's may be mid-batch), within a second.
async fn say_bye(cluster: &Cluster, broker: &dyn Broker) {
    let bye = async {
        let mut connection = broker.connect().await.ok()?;
        connection
            .publisher
            .publish(&[(cluster.channels.control.clone(), cluster.bye())])
            .await
            .ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}
