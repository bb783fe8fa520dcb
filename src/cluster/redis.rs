//! The [`Broker`] over Redis pub/sub, with the `redis` crate (redis-rs: maintained, tokio, rustls
//! for `rediss://`). One multiplexed connection publishes (a batch is one pipeline) and claims; a
//! second, in subscribe mode, receives. Either failing ends the connection, and the link above
//! reconnects.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSub};
use redis::AsyncConnectionConfig;

use super::broker::{Broker, BrokerConnection, BrokerError, Inbox, Publisher, Subscriber, Wanted};

/// How long connecting, or any one command, may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How often an idle subscriber pings, so that a connection that died silently (a host gone, a
/// partition) is noticed within a few seconds rather than at the next message.
const SUBSCRIBER_PING: Duration = Duration::from_secs(2);

/// Claims a name when it is free or already ours, renewing the lease, in one atomic step.
const CLAIM_SCRIPT: &str = "local holder = redis.call('GET', KEYS[1]) \
    if holder == false or holder == ARGV[1] then \
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
    return 0";

/// Redis as the bus between nodes.
#[derive(Debug)]
pub struct RedisBroker {
    /// The client (address, database, credentials, TLS).
    client: redis::Client,
    /// The URL without its password, for logs.
    shown: String,
}

impl RedisBroker {
    /// A broker for `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS).
    /// Nothing connects yet; a URL that cannot be used is an error naming what is wrong with it.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let shown = without_password(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| BrokerError(format!("--broker {shown}: not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(BrokerError(format!(
                "--broker {shown}: the scheme must be redis:// or rediss:// (TLS), not {}://",
                parsed.scheme()
            )));
        }
        let client =
            redis::Client::open(url).map_err(|e| BrokerError(format!("--broker {shown}: {e}")))?;
        Ok(Self { client, shown })
    }

    /// Opens the two connections.
    async fn open(&self) -> Result<BrokerConnection, BrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let publisher = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.failed(e))?;
        let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.failed(e))?;
        Ok(BrokerConnection {
            publisher: Box::new(RedisPublisher {
                connection: publisher,
                shown: self.shown.clone(),
            }),
            subscriber: Box::new(RedisSubscriber {
                pubsub,
                shown: self.shown.clone(),
            }),
        })
    }

    fn failed(&self, error: redis::RedisError) -> BrokerError {
        BrokerError(format!("Redis at {}: {error}", self.shown))
    }

    fn timed_out(&self) -> BrokerError {
        BrokerError(format!(
            "Redis at {}: no answer within {} s",
            self.shown,
            COMMAND_TIMEOUT.as_secs()
        ))
    }
}

impl Broker for RedisBroker {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn connect(&self) -> BoxFuture<'_, Result<BrokerConnection, BrokerError>> {
        self.open().boxed()
    }
}

/// `url` with its password replaced by `***` (all of its credentials, when it is not a URL).
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match url.rsplit_once('@') {
            Some((credentials, rest)) => {
                let scheme = credentials.split_once("://").map_or("", |(s, _)| s);
                format!("{scheme}://***@{rest}")
            }
            None => url.to_string(),
        },
    }
}

/// The publishing connection.
struct RedisPublisher {
    /// The multiplexed connection.
    connection: MultiplexedConnection,
    /// The URL without its password, for errors.
    shown: String,
}

impl RedisPublisher {
    fn failed(&self, error: redis::RedisError) -> BrokerError {
        BrokerError(format!("Redis at {}: {error}", self.shown))
    }
}

impl Publisher for RedisPublisher {
    fn publish<'a>(
        &'a mut self,
        batch: &'a [(Arc<str>, Bytes)],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            let mut pipe = redis::pipe();
            for (channel, payload) in batch {
                pipe.cmd("PUBLISH")
                    .arg(channel.as_bytes())
                    .arg(&payload[..])
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.connection)
                .await
                .map_err(|e| self.failed(e))
        }
        .boxed()
    }

    fn claim<'a>(
        &'a mut self,
        name: &'a str,
        holder: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        async move {
            let claimed: i64 = redis::cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(1)
                .arg(name)
                .arg(holder)
                .arg(lease.as_millis() as u64)
                .query_async(&mut self.connection)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(claimed == 1)
        }
        .boxed()
    }
}

/// Waits for a command's answer, at most [`COMMAND_TIMEOUT`]; the error says which command and
/// what went wrong.
async fn answered<T>(
    command: &str,
    answer: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{command} failed: {error}")),
        Err(_) => Err(format!("{command} got no answer")),
    }
}

/// The subscribing connection.
struct RedisSubscriber {
    /// The connection in subscribe mode.
    pubsub: PubSub,
    /// The URL without its password, for errors.
    shown: String,
}

impl Subscriber for RedisSubscriber {
    fn run(
        self: Box<Self>,
        wanted: Arc<Wanted>,
        inbox: Arc<dyn Inbox>,
    ) -> BoxFuture<'static, BrokerError> {
        let shown = self.shown;
        let failed = move |what: &str| BrokerError(format!("Redis at {shown}: {what}"));
        let (mut sink, mut stream) = self.pubsub.split();
        async move {
            let mut subscribed: BTreeSet<Arc<str>> = BTreeSet::new();
            let mut ping = tokio::time::interval(SUBSCRIBER_PING);
            loop {
                // Follow the wanted set when it changed (not per message: the set is copied).
                let now = wanted.snapshot();
                let added: Vec<&[u8]> = now
                    .difference(&subscribed)
                    .map(|c| c.as_bytes())
                    .collect();
                if !added.is_empty() {
                    if let Err(error) = answered("SUBSCRIBE", sink.subscribe(added)).await {
                        return failed(&error);
                    }
                }
                let removed: Vec<&[u8]> = subscribed
                    .difference(&now)
                    .map(|c| c.as_bytes())
                    .collect();
                if !removed.is_empty() {
                    if let Err(error) = answered("UNSUBSCRIBE", sink.unsubscribe(removed)).await {
                        return failed(&error);
                    }
                }
                subscribed = now;
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => inbox.deliver(
                                message.get_channel_name().as_bytes(),
                                Bytes::copy_from_slice(message.get_payload_bytes()),
                            ),
                            None => return failed("the connection closed"),
                        },
                        () = wanted.changed() => break,
                        _ = ping.tick() => {
                            if let Err(error) = answered("PING", sink.ping::<redis::Value>()).await {
                                return failed(&error);
                            }
                        }
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs_and_bad_urls_say_what_is_wrong() {
        assert_eq!(
            without_password("redis://user:secret@127.0.0.1:6379/2"),
            "redis://user:***@127.0.0.1:6379/2"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let error = RedisBroker::new("http://127.0.0.1:6379").unwrap_err();
        assert!(
            error.0.contains("redis:// or rediss://"),
            "unexpected: {error}"
        );
        let error = RedisBroker::new("redis://:hunter2@").unwrap_err();
        assert!(!error.0.contains("hunter2"), "password shown: {error}");
    }
}
