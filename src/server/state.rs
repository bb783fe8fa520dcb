//! What every request handler of the server shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::console::access::ConsoleAccess;
use super::console::activity::Activity;
use super::files::StaticFiles;
use super::stomp::broker::StompBroker;
use crate::endpoints::Runtime;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The running Switchboard: what is served, who is connected, the isolates.
    pub runtime: Arc<Runtime>,
    /// Set once shutdown has begun: new upgrades are refused.
    pub shutting_down: Arc<AtomicBool>,
    /// The WebSocket connection tasks, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Reads projects' static files, a bounded number at once.
    pub static_files: StaticFiles,
    /// STOMP sessions and their broker subscriptions.
    pub stomp: Arc<StompBroker>,
    /// Who may use the web console.
    pub console: Arc<ConsoleAccess>,
    /// The console's per-second samples.
    pub activity: Arc<Activity>,
}

impl AppState {
    /// The server's state over `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        let stomp = Arc::new(StompBroker::default());
        // A handler's publish(topic) reaches STOMP subscribers of /topic/{topic} too.
        runtime.connections.set_relay(stomp.clone());
        Self {
            runtime,
            shutting_down: Default::default(),
            tasks: Default::default(),
            static_files: Default::default(),
            stomp,
            console: Default::default(),
            activity: Default::default(),
        }
    }

    /// The same state with the console's access rule; when the console is on, its sampling
    /// starts now, so that the chart has the minutes before it is first opened (call inside the
    /// network runtime).
    pub fn with_console(mut self, access: ConsoleAccess) -> Self {
        if access.enabled {
            self.activity.start(&self.runtime);
        }
        self.console = Arc::new(access);
        self
    }
}
