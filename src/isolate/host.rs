//! The isolate host: one isolate per handler module, each on its own OS thread with its own
//! current-thread tokio runtime (which also drives the sockets of the handler's connections),
//! started on first use, reloaded in place, stopped when unloaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::init_engine;
use super::ops::{ClientHandlers, HandlerFeatures, Services};
use super::runtime::{run_isolate_thread, IsolateSetup};
use super::slot::{HandlerIsolate, HandlerSlot};
use crate::event::{EventSink, HandlerLoadError, IsolateEvent};
use crate::limits::Limits;
use crate::net::clients::{ClientConnection, ClientRegistry};
use crate::net::connections::ConnectionRegistry;
use crate::net::home::SocketHome;
use crate::stats::Stats;
use crate::workspace::modules::ModuleFiles;
use crate::workspace::WorkspacePaths;

/// Events waiting for one isolate before the connections feeding it stop reading (backpressure).
const EVENT_QUEUE: usize = 4096;

/// Starts isolates for handler modules and keeps one per module.
#[derive(Debug)]
pub struct IsolateHost {
    /// The workspace the handlers' modules come from.
    paths: WorkspacePaths,
    /// What every isolate's ops reach.
    services: Services,
    /// The network side's runtime: outbound clients' sockets are driven there.
    network: tokio::runtime::Handle,
    /// The handlers, by canonical file; a slot stays while its module is loaded.
    slots: tokio::sync::Mutex<HashMap<PathBuf, Arc<HandlerSlot>>>,
    /// How many isolate threads are alive (for `/metrics`).
    live: Arc<AtomicUsize>,
    /// The host itself, for the client tasks it spawns.
    me: Weak<IsolateHost>,
}

impl IsolateHost {
    /// Must be called inside the network side's tokio runtime, which client sockets will use.
    pub fn new(
        paths: WorkspacePaths,
        connections: Arc<ConnectionRegistry>,
        clients: Arc<ClientRegistry>,
        limits: Arc<Limits>,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        init_engine();
        let network = tokio::runtime::Handle::current();
        Arc::new_cyclic(|host: &Weak<IsolateHost>| {
            let client_handlers: Weak<dyn ClientHandlers> = host.clone();
            Self {
                paths,
                services: Services {
                    connections,
                    clients,
                    client_handlers,
                    limits,
                    stats,
                },
                network,
                slots: Default::default(),
                live: Arc::new(AtomicUsize::new(0)),
                me: host.clone(),
            }
        })
    }

    /// The workspace.
    pub fn paths(&self) -> &WorkspacePaths {
        &self.paths
    }

    /// The handler `handler_file`, its isolate started (module loaded, top level run) if it is
    /// not running yet.
    pub async fn isolate_for(
        &self,
        handler_file: &Path,
    ) -> Result<Arc<HandlerSlot>, HandlerLoadError> {
        let mut slots = self.slots.lock().await;
        if let Some(slot) = slots.get(handler_file) {
            if slot.isolate().is_some() {
                return Ok(slot.clone());
            }
        }
        let isolate = self.start(handler_file).await?;
        let slot = Arc::new(HandlerSlot {
            handler_file: handler_file.to_path_buf(),
            handler: self.paths.display(handler_file),
            current: RwLock::new(Some(Arc::new(isolate))),
        });
        slots.insert(handler_file.to_path_buf(), slot.clone());
        Ok(slot)
    }

    /// Replaces the code of the handler `handler_file` by the module's current version, in its
    /// running isolate: open connections stay, and their next events run the new code with fresh
    /// module state (timers of the old code are cancelled). If the new code fails to load, the
    /// old code keeps serving and the error is returned. The isolate is kept, not replaced,
    /// because creating an engine context costs memory that the QuickJS engine never gives back.
    pub async fn reload(&self, handler_file: &Path) -> Result<(), HandlerLoadError> {
        let slot = self.slots.lock().await.get(handler_file).cloned();
        let Some(slot) = slot else {
            return self.isolate_for(handler_file).await.map(|_| ());
        };
        let (done, result) = oneshot::channel();
        let gone = || HandlerLoadError::Stopped {
            file: slot.handler.clone(),
        };
        slot.deliver(IsolateEvent::Reload { done })
            .await
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    /// Unloads the handler `handler_file`, if it runs.
    pub async fn stop(&self, handler_file: &Path) {
        if let Some(slot) = self.slots.lock().await.remove(handler_file) {
            slot.retire();
        }
    }

    /// The handlers that have a running isolate.
    pub async fn running(&self) -> Vec<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .await
            .values()
            .filter(|slot| slot.isolate().is_some())
            .cloned()
            .collect()
    }

    /// The handler `handler_file` if its isolate runs (it is not started).
    pub async fn running_slot(&self, handler_file: &Path) -> Option<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .await
            .get(handler_file)
            .filter(|slot| slot.isolate().is_some())
            .cloned()
    }

    /// Stops every isolate and waits (up to `limit`) for their threads to finish queued events.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        let slots: Vec<_> = self.slots.lock().await.drain().map(|(_, s)| s).collect();
        let threads: Vec<_> = slots
            .iter()
            .filter_map(|slot| slot.retire())
            .filter_map(|isolate| isolate.thread.lock().take())
            .collect();
        drop(slots);
        let join = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = tokio::time::timeout(limit, join).await;
    }

    /// How many isolate threads are alive.
    pub fn live_isolates(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Starts an isolate thread for `handler_file` and waits until its module has loaded.
    async fn start(&self, handler_file: &Path) -> Result<HandlerIsolate, HandlerLoadError> {
        let handler = self.paths.display(handler_file);
        let failed = |what: &'static str, reason: String| HandlerLoadError::Isolate {
            file: handler.clone(),
            what,
            reason,
        };
        let modules = ModuleFiles::new(self.paths.clone());
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (ready, started) = oneshot::channel();
        let (idle_sender, idle) = watch::channel(false);
        let features = Arc::new(HandlerFeatures::default());
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("cannot start the isolate's runtime", e.to_string()))?;
        let sockets = SocketHome::new(tokio.handle().clone());
        let setup = IsolateSetup {
            sockets: sockets.clone(),
            features: features.clone(),
            handler_file: handler_file.to_path_buf(),
            handler: handler.clone(),
            modules: modules.clone(),
            services: self.services.clone(),
            idle: idle_sender,
        };
        let live = self.live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("isolate:{handler}"))
            .spawn(move || {
                // Counts the thread out even if the isolate's code panics it.
                struct Ended(Arc<AtomicUsize>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _ended = Ended(live);
                run_isolate_thread(tokio, setup, receiver, ready);
            })
            .map_err(|e| {
                self.live.fetch_sub(1, Ordering::SeqCst);
                failed("cannot start a thread", e.to_string())
            })?;
        match started.await {
            Ok(Ok(())) => {
                tracing::debug!(handler, "isolate started");
                Ok(HandlerIsolate {
                    events,
                    idle,
                    modules,
                    features,
                    sockets,
                    thread: Mutex::new(Some(spawned)),
                })
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(failed(
                "the isolate's thread ended during start-up",
                "it stopped before reporting".into(),
            )),
        }
    }
}

impl ClientHandlers for IsolateHost {
    /// Runs the client on the network runtime once its handler's isolate runs (started if need
    /// be); a handler that fails to load ends the client without connecting.
    fn run_client(&self, client: ClientConnection) {
        let host = self.me.clone();
        self.network.spawn(async move {
            let Some(host) = host.upgrade() else {
                client.abandon("the runtime is shutting down");
                return;
            };
            let handler = host.isolate_for(client.handler_file()).await;
            drop(host);
            match handler {
                Ok(handler) => client.run(&*handler).await,
                Err(error) => client.abandon(&format!("its handler failed to load: {error}")),
            }
        });
    }
}
