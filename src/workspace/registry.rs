//! The single source of truth for what is served: endpoints by name, plus the problems to show.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::endpoint::{Endpoint, Problem};
use super::scan::WorkspaceScan;
use crate::event::HandlerLoadError;

/// The endpoints being served and the workspace's current problems.
#[derive(Debug, Default)]
pub struct EndpointRegistry {
    /// Replaced whole on every scan, so a reader always sees one consistent state.
    state: RwLock<Arc<RegistryState>>,
    /// Handler modules that failed to load, by canonical file: their endpoints answer with this error.
    handler_errors: RwLock<HashMap<PathBuf, HandlerLoadError>>,
}

/// One consistent view of the registry.
#[derive(Debug, Default)]
pub struct RegistryState {
    /// The endpoints served, by name.
    pub endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Descriptors skipped, with the reason.
    pub problems: Vec<Problem>,
    /// Remarks on descriptors that still serve.
    pub warnings: Vec<Problem>,
}

/// What a new scan changed compared with the previous state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegistryChange {
    /// Endpoints new in this scan.
    pub added: Vec<Arc<Endpoint>>,
    /// Endpoints gone in this scan.
    pub removed: Vec<Arc<Endpoint>>,
    /// Endpoints whose descriptor changed (handler, description or file): (old, new).
    pub changed: Vec<(Arc<Endpoint>, Arc<Endpoint>)>,
}

impl RegistryChange {
    /// Whether the scan changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl EndpointRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the served set with `scan` and returns the difference.
    pub fn apply(&self, scan: WorkspaceScan) -> RegistryChange {
        let mut state = self.state.write();
        let old = &state.endpoints;
        let mut change = RegistryChange::default();
        for (name, endpoint) in &scan.endpoints {
            match old.get(name) {
                None => change.added.push(endpoint.clone()),
                Some(previous) if previous != endpoint => {
                    change.changed.push((previous.clone(), endpoint.clone()))
                }
                Some(_) => {}
            }
        }
        for (name, endpoint) in old {
            if !scan.endpoints.contains_key(name) {
                change.removed.push(endpoint.clone());
            }
        }
        *state = Arc::new(RegistryState {
            endpoints: scan.endpoints,
            problems: scan.problems,
            warnings: scan.warnings,
        });
        change
    }

    /// The endpoint served under `name`, if any.
    pub fn endpoint(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.state.read().endpoints.get(name).cloned()
    }

    /// A consistent snapshot of everything served.
    pub fn snapshot(&self) -> Arc<RegistryState> {
        self.state.read().clone()
    }

    /// Records (or clears, with `None`) the load error of a handler module.
    pub fn set_handler_error(&self, handler_file: &Path, error: Option<HandlerLoadError>) {
        let mut errors = self.handler_errors.write();
        match error {
            Some(error) => errors.insert(handler_file.to_path_buf(), error),
            None => errors.remove(handler_file),
        };
    }

    /// The load error of a handler module, if its last load failed.
    pub fn handler_error(&self, handler_file: &Path) -> Option<HandlerLoadError> {
        self.handler_errors.read().get(handler_file).cloned()
    }
}
