//! The running Switchboard, as the reloader changes it and the server reads it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::isolate::IsolateHost;
use crate::limits::Limits;
use crate::net::clients::ClientRegistry;
use crate::net::connections::ConnectionRegistry;
use crate::stats::Stats;
use crate::workspace::{EndpointRegistry, WorkspacePaths};

use super::lifecycle::Lifecycle;

/// A running Switchboard: the workspace, what it serves, who is connected, the isolates, the
/// endpoints' lifecycles, limits and counters.
#[derive(Debug)]
pub struct Runtime {
    /// The workspace, canonical: handlers, modules and static files are found in it.
    pub workspace: WorkspacePaths,
    /// What is served.
    pub endpoints: Arc<EndpointRegistry>,
    /// Where connections are registered for sending and listing.
    pub connections: Arc<ConnectionRegistry>,
    /// Outbound clients created by handlers.
    pub clients: Arc<ClientRegistry>,
    /// The handler isolates.
    pub isolates: Arc<IsolateHost>,
    /// onStart/onTick/onStop of the bound endpoints.
    pub lifecycle: Lifecycle,
    /// Limits and timeouts.
    pub limits: Arc<Limits>,
    /// Counters for `/metrics`.
    pub stats: Arc<Stats>,
    /// Workspace changes applied since start, for `/metrics`.
    pub reloads: AtomicU64,
    /// The last reloads, newest last, for the web console.
    pub reload_history: parking_lot::Mutex<std::collections::VecDeque<ReloadRecord>>,
}

/// How many reloads the history keeps.
pub const RELOAD_HISTORY: usize = 50;

/// One applied workspace change, as the console's reload history shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// When it was applied, in milliseconds since the Unix epoch.
    pub time: u64,
    /// How long it took, in milliseconds.
    pub milliseconds: f64,
    /// The files that changed, relative to the workspace.
    pub changed: String,
    /// What it did: one entry per endpoint or handler affected.
    pub report: Vec<String>,
    /// Whether a handler failed to load, or to reload (the last good version kept serving).
    pub failed: bool,
}

impl Runtime {
    /// Records a reload in the history.
    pub fn record_reload(&self, record: ReloadRecord) {
        let mut history = self.reload_history.lock();
        if history.len() == RELOAD_HISTORY {
            history.pop_front();
        }
        history.push_back(record);
    }
}

impl Runtime {
    /// A runtime for the workspace `workspace` with nothing served yet (inside the network side's
    /// tokio runtime, which outbound clients will use).
    pub fn new(workspace: WorkspacePaths, limits: Limits) -> Arc<Self> {
        let connections = Arc::new(ConnectionRegistry::new());
        let clients = Arc::new(ClientRegistry::new());
        let limits = Arc::new(limits);
        let stats = Arc::new(Stats::default());
        stats
            .compression_windows
            .set_limit(limits.compression_memory);
        let isolates = IsolateHost::new(
            workspace.clone(),
            connections.clone(),
            clients.clone(),
            limits.clone(),
            stats.clone(),
        );
        Arc::new(Self {
            workspace,
            endpoints: Arc::new(EndpointRegistry::new()),
            connections,
            clients,
            isolates,
            lifecycle: Lifecycle::default(),
            limits,
            stats,
            reloads: AtomicU64::new(0),
            reload_history: Default::default(),
        })
    }
}
