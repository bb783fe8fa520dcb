//! A handler's thread as a home for sockets: a connection whose reads, handler calls and writes
//! all happen on one thread costs no thread switch per message. The isolate layer makes one per
//! isolate thread; the server moves each upgraded socket to its handler's home.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

use super::connections::ConnectionRegistry;
use crate::event::ConnectionId;

/// The sockets driven on one thread, and the thread's runtime to drive them on.
#[derive(Debug, Clone)]
pub struct SocketHome {
    /// The thread's tokio runtime.
    runtime: tokio::runtime::Handle,
    /// The socket tasks, which the thread lets finish (bounded) before it ends.
    tasks: TaskTracker,
    /// The connections driven here; `None` once the home has closed.
    connections: Arc<Mutex<Option<HashSet<ConnectionId>>>>,
}

impl SocketHome {
    /// A home on the thread whose runtime is `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            tasks: TaskTracker::new(),
            connections: Arc::new(Mutex::new(Some(HashSet::new()))),
        }
    }

    /// Runs a socket's task on the home's thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(self.tasks.track_future(task));
    }

    /// Records a connection driven here, so that it is closed if the home closes. False if the
    /// home has already closed.
    pub fn adopt(&self, id: ConnectionId) -> bool {
        self.connections
            .lock()
            .as_mut()
            .is_some_and(|open| open.insert(id))
    }

    /// Forgets a connection that has closed.
    pub fn release(&self, id: ConnectionId) {
        if let Some(open) = self.connections.lock().as_mut() {
            open.remove(&id);
        }
    }

    /// Closes the home (its handler stopped serving events): the connections still open are
    /// closed (1001, after what is queued for them), new ones are refused, and their tasks get
    /// `grace` to finish their close handshakes. Returns false if some did not finish in time.
    pub async fn close(&self, registry: &ConnectionRegistry, grace: Duration) -> bool {
        let open = self.connections.lock().take().unwrap_or_default();
        for id in open {
            let _ = registry.close(id, 1001, "handler unloaded".into());
        }
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}
