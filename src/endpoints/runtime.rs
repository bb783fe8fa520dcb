//! The running Switchboard, as the reloader changes it and the server reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::event::HandlerLoadError;
use crate::isolate::{HandlerSlot, IsolateHost};
use crate::limits::Limits;
use crate::net::clients::ClientRegistry;
use crate::net::connections::ConnectionRegistry;
use crate::stats::Stats;
use crate::workspace::{Endpoint, EndpointRegistry, WorkspacePaths};

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
    /// When handlers load: all at start, or each on first use.
    pub loading: Loading,
    /// Held while endpoints are bound, so that `onStart` runs once per binding even when a
    /// handler's first connections and a reload bind at the same time.
    binding: tokio::sync::Mutex<()>,
}

/// When handler modules are loaded (`serve --load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loading {
    /// Every handler at start: load errors are logged before the server announces itself, and
    /// `onStart` runs at start.
    #[default]
    Eager,
    /// Each handler on its first use (an upgrade, a STOMP subscription), except those of
    /// endpoints with a `service`, which load at start to tick: a handler never used costs no
    /// memory, thread or start-up time. Its load errors appear at first use (`check` finds
    /// them all beforehand), and `onStart` runs just before its first connection is opened.
    Lazy {
        /// Unloads a handler nothing has used for this long (`--unload-idle`), so that it costs
        /// nothing again until its next use (which loads it afresh); never when `None`.
        unload_idle: Option<std::time::Duration>,
    },
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
    /// tokio runtime, which outbound clients will use), loading every handler at start.
    pub fn new(workspace: WorkspacePaths, limits: Limits) -> Arc<Self> {
        Self::with_loading(workspace, limits, Loading::Eager)
    }

    /// [`Runtime::new`], loading handlers as `loading` says.
    pub fn with_loading(workspace: WorkspacePaths, limits: Limits, loading: Loading) -> Arc<Self> {
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
            loading,
            binding: Default::default(),
        })
    }

    /// The handler `handler_file`, serving: loaded now if it is not yet, or reloaded if it
    /// failed and its files changed (then its load error is recorded for the endpoint list and
    /// its endpoints are bound, `onStart` included, before this returns), or why it cannot serve.
    pub async fn handler(&self, handler_file: &Path) -> Result<Arc<HandlerSlot>, HandlerLoadError> {
        if self.isolates.running_slot(handler_file).await.is_some() {
            return self.isolates.isolate_for(handler_file).await;
        }
        let first_load = !self.isolates.has_isolate(handler_file).await;
        let started = Instant::now();
        let loaded = self.isolates.isolate_for(handler_file).await;
        match &loaded {
            Ok(_) => {
                self.endpoints.set_handler_error(handler_file, None);
                if first_load {
                    tracing::info!(
                        "handler {} loaded on first use in {:.1} ms",
                        self.workspace.display(handler_file),
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                }
                self.bind_unbound(Some(handler_file)).await;
            }
            Err(error) => {
                if self.endpoints.handler_error(handler_file).as_ref() != Some(error) {
                    tracing::error!("{error}");
                    self.endpoints
                        .set_handler_error(handler_file, Some(error.clone()));
                }
            }
        }
        loaded
    }

    /// Whether the handler of `endpoint` loads at start rather than at its first use: always
    /// when loading is eager, and with `--load lazy` when the endpoint has a service to tick.
    pub fn loads_at_start(&self, endpoint: &Endpoint) -> bool {
        self.loading == Loading::Eager || endpoint.options.service_interval.is_some()
    }

    /// Tells the isolate host how many instances each handler runs: the most that any of its
    /// endpoints asks for (`instances`), since endpoints that share a module share its isolates.
    pub fn want_instances(&self) {
        let mut wanted: HashMap<PathBuf, usize> = HashMap::new();
        for endpoint in self.endpoints.snapshot().endpoints.values() {
            let count = wanted.entry(endpoint.handler_file.clone()).or_insert(1);
            *count = (*count).max(endpoint.options.instance_count());
        }
        self.isolates.set_wanted_instances(wanted);
    }

    /// Runs `onStart` (and starts ticks) for every served endpoint not bound yet whose handler
    /// serves (only those of `handler_file`, if given).
    pub async fn bind_unbound(&self, handler_file: Option<&Path>) {
        let _binding = self.binding.lock().await;
        for endpoint in self.endpoints.snapshot().endpoints.values() {
            if handler_file.is_some_and(|file| file != endpoint.handler_file)
                || self.lifecycle.is_bound(&endpoint.name)
            {
                continue;
            }
            if let Some(slot) = self.isolates.running_slot(&endpoint.handler_file).await {
                self.lifecycle.bind(endpoint.clone(), slot).await;
            }
        }
    }
}
