//! The workspace: project folders holding `*.websocket` descriptors and their handler modules.
//!
//! - [`paths`]: the one resolver every file the runtime opens for a user goes through.
//! - [`modules`]: module kinds, built-in module names, the record of module files an isolate read.
//! - [`descriptor`]: one `*.websocket` file, parsed and checked.
//! - [`scan`]: every descriptor of the workspace, as endpoints and problems.
//! - [`registry`]: the endpoints being served (the single source of truth).
//! - [`watch`]: file-system changes, debounced.

pub mod descriptor;
pub mod modules;
pub mod paths;
pub mod registry;
pub mod scan;
pub mod watch;

pub use descriptor::{resolve_handler, EndpointOptions};
pub use paths::WorkspacePaths;
pub use registry::EndpointRegistry;
pub use scan::{scan, WorkspaceScan};

use std::path::PathBuf;

/// The file extension that marks a descriptor.
pub const DESCRIPTOR_EXTENSION: &str = "websocket";

/// One endpoint to serve, as a descriptor defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's name, as in `/websockets/v4/service/{name}`.
    pub name: String,
    /// The top-level project folder the descriptor is in.
    pub project: String,
    /// The descriptor's path relative to the workspace root, for logs and listings.
    pub descriptor_file: String,
    /// The handler as the descriptor wrote it.
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The descriptor's description.
    pub description: String,
    /// Per-endpoint limits and services.
    pub options: EndpointOptions,
}

/// Something wrong with one file of the workspace; the file is skipped, the rest still serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the workspace root.
    pub file: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// Errors that make a folder unusable as a workspace (per-file trouble is a [`Problem`] instead).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The folder could not be read.
    #[error("workspace {path} cannot be read")]
    Unreadable {
        /// The folder as given.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// It is a file, not a folder.
    #[error("workspace {0} is not a directory")]
    NotADirectory(String),
}
