//! The isolate host: one isolate per handler module (or per instance of it, when its endpoints
//! ask for `instances`), each on its own OS thread with its own current-thread tokio runtime
//! (which also drives the sockets of the connections it serves), started on first use, reloaded
//! in place, stopped when unloaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::init_engine;
use super::ops::{ClientHandlers, HandlerFeatures, Services};
use super::runtime::{run_isolate_thread, IsolateSetup, Started};
use super::slot::{HandlerIsolate, HandlerSlot};
use crate::event::{HandlerLoadError, IsolateEvent};
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
    /// The handlers, by canonical file; a slot stays until its handler is unloaded. Locked only
    /// to look a slot up: loads wait on the slot's own lock.
    slots: Mutex<HashMap<PathBuf, Arc<HandlerSlot>>>,
    /// How many instances each handler runs, by canonical file, as its endpoints ask (1 when
    /// not listed).
    wanted: Mutex<HashMap<PathBuf, usize>>,
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
                wanted: Default::default(),
                live: Arc::new(AtomicUsize::new(0)),
                me: host.clone(),
            }
        })
    }

    /// The workspace.
    pub fn paths(&self) -> &WorkspacePaths {
        &self.paths
    }

    /// Records how many instances each handler should run (handlers not listed run one). A
    /// running handler changes its count at [`IsolateHost::resize`].
    pub fn set_wanted_instances(&self, wanted: HashMap<PathBuf, usize>) {
        *self.wanted.lock() = wanted;
    }

    /// How many instances the handler `handler_file` should run.
    pub fn wanted_instances(&self, handler_file: &Path) -> usize {
        self.wanted.lock().get(handler_file).copied().unwrap_or(1)
    }

    /// Brings a running handler to the number of instances it should run: new instances load
    /// the module's current code; removed ones (the last) stop, closing the connections they
    /// served (1001). Returns the counts before and after if it changed anything; an error if a
    /// new instance failed to load (then it is not added).
    pub async fn resize(
        &self,
        handler_file: &Path,
    ) -> Result<Option<(usize, usize)>, HandlerLoadError> {
        let Some(slot) = self.slots.lock().get(handler_file).cloned() else {
            return Ok(None);
        };
        let _loading = slot.loading.lock().await;
        let before = slot.instance_count();
        let wanted = self.wanted_instances(handler_file);
        // A handler whose code failed to load gets its count once a reload fixes it.
        if before == 0 || before == wanted || slot.failure().is_some() {
            return Ok(None);
        }
        if wanted < before {
            // Dropped: their threads end.
            slot.current.write().truncate(wanted);
            return Ok(Some((before, wanted)));
        }
        let mut failure = None;
        for outcome in self.start_isolates(&slot, before..wanted).await {
            match outcome {
                Ok((isolate, Started::Loaded)) => slot.current.write().push(Arc::new(isolate)),
                // Dropped: its thread ends.
                Ok((_, Started::CodeFailed(error))) | Err(error) => failure = Some(error),
            }
        }
        let after = slot.instance_count();
        match failure {
            Some(error) => Err(error),
            None => Ok(Some((before, after))),
        }
    }

    /// The handler `handler_file`, its isolate started (module loaded, top level run) if it is
    /// not running yet. A handler whose code failed to load answers with that failure, without
    /// loading it again, until one of the files its load read (or looked for) changes; then it
    /// is reloaded in its isolate. Only this handler's load is waited for: other handlers (and
    /// upgrades to them) never wait on it.
    pub async fn isolate_for(
        &self,
        handler_file: &Path,
    ) -> Result<Arc<HandlerSlot>, HandlerLoadError> {
        let slot = self.slot_or_new(handler_file);
        let failure = {
            let _loading = slot.loading.lock().await;
            if slot.isolate().is_none() {
                self.start(&slot).await;
            } else if slot.failure().is_some() && !slot.changed_files().is_empty() {
                let _ = Self::reload_in_place(&slot).await;
            }
            slot.failure()
        };
        match failure {
            Some(error) => Err(error),
            None => Ok(slot),
        }
    }

    /// Replaces the code of the handler `handler_file` by the module's current version, in its
    /// running isolate: open connections stay, and their next events run the new code with fresh
    /// module state (timers of the old code are cancelled). If the new code fails to load, the
    /// old code keeps serving and the error is returned. The isolate is kept, not replaced,
    /// because creating an engine context costs memory that the QuickJS engine never gives back.
    pub async fn reload(&self, handler_file: &Path) -> Result<(), HandlerLoadError> {
        let slot = self.slot_or_new(handler_file);
        let _loading = slot.loading.lock().await;
        if slot.isolate().is_none() {
            self.start(&slot).await;
            return slot.failure().map_or(Ok(()), Err);
        }
        Self::reload_in_place(&slot).await
    }

    /// Unloads the handler `handler_file`, if it runs.
    pub async fn stop(&self, handler_file: &Path) {
        let removed = self.slots.lock().remove(handler_file);
        if let Some(slot) = removed {
            slot.retire();
        }
    }

    /// Unloads the handler `handler_file` if nothing uses it now (no connection given to it,
    /// nothing pending in it; see [`HandlerSlot::retire_if_unused`]): its next use loads it
    /// again. True if it was unloaded.
    pub async fn unload_if_unused(&self, handler_file: &Path) -> bool {
        let mut slots = self.slots.lock();
        let unloaded = slots
            .get(handler_file)
            .is_some_and(|slot| slot.retire_if_unused());
        if unloaded {
            slots.remove(handler_file);
        }
        unloaded
    }

    /// The handlers that have isolates (their code loaded, or failed to).
    pub async fn running(&self) -> Vec<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .values()
            .filter(|slot| slot.isolate().is_some())
            .cloned()
            .collect()
    }

    /// The handler `handler_file` if its code is loaded and serving (it is not started).
    pub async fn running_slot(&self, handler_file: &Path) -> Option<Arc<HandlerSlot>> {
        self.slots
            .lock()
            .get(handler_file)
            .filter(|slot| slot.is_serving())
            .cloned()
    }

    /// Whether the handler `handler_file` has an isolate (its code loaded, or failed to).
    pub async fn has_isolate(&self, handler_file: &Path) -> bool {
        self.slots
            .lock()
            .get(handler_file)
            .is_some_and(|slot| slot.isolate().is_some())
    }

    /// The slot of `handler_file`, made (without an isolate) if there is none.
    fn slot_or_new(&self, handler_file: &Path) -> Arc<HandlerSlot> {
        self.slots
            .lock()
            .entry(handler_file.to_path_buf())
            .or_insert_with(|| {
                Arc::new(HandlerSlot::new(
                    handler_file.to_path_buf(),
                    self.paths.display(handler_file),
                ))
            })
            .clone()
    }

    /// Loads the current code into the slot's running isolates, every instance at once (under
    /// its `loading` lock), and records the outcome (the first instance's error, if any failed).
    async fn reload_in_place(slot: &HandlerSlot) -> Result<(), HandlerLoadError> {
        let gone = || HandlerLoadError::Stopped {
            file: slot.handler.clone(),
        };
        let reloads = slot.instances().into_iter().map(|isolate| async move {
            let (done, result) = oneshot::channel();
            match isolate.events.send(IsolateEvent::Reload { done }).await {
                Err(_) => Err(gone()),
                Ok(()) => result.await.unwrap_or_else(|_| Err(gone())),
            }
        });
        let outcome = futures_util::future::join_all(reloads)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ());
        let mut failure = slot.failure.lock();
        match &outcome {
            // A failed reload of code that was serving leaves it serving.
            Err(error) if failure.is_some() => *failure = Some(error.clone()),
            Err(_) => {}
            Ok(()) => *failure = None,
        }
        outcome
    }

    /// Stops every isolate and waits (up to `limit`) for their threads to finish queued events.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        let slots: Vec<_> = self.slots.lock().drain().map(|(_, s)| s).collect();
        let threads: Vec<_> = slots
            .iter()
            .flat_map(|slot| slot.retire())
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

    /// Starts the slot's isolate threads, one per instance and all at once (under its
    /// `loading` lock), and waits until the module has loaded in each, or failed to; records
    /// the outcome in the slot (the first failure). If an isolate itself cannot be made, the
    /// slot keeps those that were (none if none was) and its failure says why.
    async fn start(&self, slot: &HandlerSlot) {
        let instances = self.wanted_instances(&slot.handler_file);
        let mut isolates = Vec::with_capacity(instances);
        let mut failure = None;
        for outcome in self.start_isolates(slot, 0..instances).await {
            match outcome {
                Ok((isolate, Started::Loaded)) => isolates.push(Arc::new(isolate)),
                Ok((isolate, Started::CodeFailed(error))) => {
                    isolates.push(Arc::new(isolate));
                    failure.get_or_insert(error);
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if !isolates.is_empty() {
            tracing::debug!(
                handler = slot.handler,
                instances = isolates.len(),
                "isolate started"
            );
        }
        *slot.current.write() = isolates;
        *slot.failure.lock() = failure;
    }

    /// Starts the isolate threads of the slot's instances `indexes`, all at once, and waits
    /// for each to have loaded the module (or failed to).
    async fn start_isolates(
        &self,
        slot: &HandlerSlot,
        indexes: std::ops::Range<usize>,
    ) -> Vec<Result<(HandlerIsolate, Started), HandlerLoadError>> {
        futures_util::future::join_all(indexes.map(|index| self.start_isolate(slot, index))).await
    }

    /// Starts an isolate thread for instance `index` of the slot's handler; returns it once its
    /// module has loaded (or failed to load, which the isolate survives).
    async fn start_isolate(
        &self,
        slot: &HandlerSlot,
        index: usize,
    ) -> Result<(HandlerIsolate, Started), HandlerLoadError> {
        let handler_file = &slot.handler_file;
        let handler = &slot.handler;
        let failed = |what: &'static str, reason: String| HandlerLoadError::Isolate {
            file: handler.to_string(),
            what,
            reason,
        };
        let modules = ModuleFiles::new(self.paths.clone());
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let (ready, started) = oneshot::channel();
        let (idle_sender, idle) = watch::channel(false);
        let features = Arc::new(HandlerFeatures::default());
        let activity = Arc::new(AtomicU64::new(0));
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("cannot start the isolate's runtime", e.to_string()))?;
        let sockets = SocketHome::new(tokio.handle().clone());
        let setup = IsolateSetup {
            sockets: sockets.clone(),
            features: features.clone(),
            handler_file: handler_file.to_path_buf(),
            handler: handler.to_string(),
            instance: index,
            modules: modules.clone(),
            services: self.services.clone(),
            idle: idle_sender,
            activity: activity.clone(),
        };
        let live = self.live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let thread_name = match index {
            0 => format!("isolate:{handler}"),
            n => format!("isolate:{handler}#{n}"),
        };
        let spawned = std::thread::Builder::new()
            .name(thread_name)
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
        let outcome = match started.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(failed(
                    "the isolate's thread ended during start-up",
                    "it stopped before reporting".into(),
                ))
            }
        };
        let isolate = HandlerIsolate {
            events,
            idle,
            modules,
            features,
            sockets,
            thread: Mutex::new(Some(spawned)),
            assigned: Arc::default(),
            activity,
        };
        Ok((isolate, outcome))
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
                Ok(handler) => {
                    let sink = handler.spread_sink(client.spread());
                    client.run(&sink).await
                }
                Err(error) => client.abandon(&format!("its handler failed to load: {error}")),
            }
        });
    }
}
