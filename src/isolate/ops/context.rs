//! What the ops of one isolate reach, kept in its `OpState`: the runtime-wide services (among
//! them the isolate host, as [`ClientHandlers`]) and the isolate's own context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use crate::limits::Limits;
use crate::net::clients::{ClientConnection, ClientRegistry};
use crate::net::connections::ConnectionRegistry;
use crate::stats::Stats;
use crate::workspace::modules::ModuleFiles;

/// The runtime-wide services that an isolate's ops reach.
#[derive(Debug, Clone)]
pub struct Services {
    /// Inbound connections, for `conn.send` and `conn.close`.
    pub connections: Arc<ConnectionRegistry>,
    /// Outbound clients.
    pub clients: Arc<ClientRegistry>,
    /// Runs a new client once its handler's isolate runs (the isolate host).
    pub client_handlers: Weak<dyn ClientHandlers>,
    /// Limits on queues, events and heaps.
    pub limits: Arc<Limits>,
    /// Counters for `/metrics`.
    pub stats: Arc<Stats>,
}

/// What the ops of one isolate need, kept in its `OpState`.
pub struct IsolateContext {
    /// The handler module this isolate runs, as shown in logs (`my-project/ws-handler.js`).
    pub handler: String,
    /// Which of the handler's instances this isolate is (0 for the first): the clients it
    /// creates for its own module run their events here, where the module state that made them
    /// lives.
    pub instance: usize,
    /// Resolves and reads `require()`d modules inside the workspace, recording what was read.
    pub modules: ModuleFiles,
    /// Connections, clients, limits and counters.
    pub services: Services,
    /// Where the handler's optional exports are recorded.
    pub features: Arc<HandlerFeatures>,
}

/// Runs new clients. The isolate host implements it: a client runs once its handler's isolate
/// runs. The ops know the host only through this trait, so they stay below it.
pub trait ClientHandlers: Send + Sync + std::fmt::Debug {
    /// Runs `client` to its end (on the network runtime), once its handler's isolate runs.
    fn run_client(&self, client: ClientConnection);
}

/// For isolates that run no clients (`switchboard check`): every client is abandoned.
#[derive(Debug)]
pub struct NoClientHandlers;

impl ClientHandlers for NoClientHandlers {
    fn run_client(&self, client: ClientConnection) {
        client.abandon("clients do not run here");
    }
}

/// Which optional exports the handler's current code has, so that the network side asks only
/// handlers that care (an `onUpgrade` round trip costs every upgrade a wait for the isolate).
#[derive(Debug, Default)]
pub struct HandlerFeatures {
    /// The code exports `onUpgrade`.
    pub on_upgrade: AtomicBool,
    /// The code exports `onTick`.
    pub on_tick: AtomicBool,
}

impl HandlerFeatures {
    /// Records the export names of newly loaded code.
    pub fn set_exports(&self, names: &[&str]) {
        let has = |name: &str| names.contains(&name);
        self.on_upgrade.store(has("onUpgrade"), Ordering::SeqCst);
        self.on_tick.store(has("onTick"), Ordering::SeqCst);
    }
}
