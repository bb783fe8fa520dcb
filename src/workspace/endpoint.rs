//! What a scan of the workspace finds: endpoints to serve, and problems with files.

use std::path::PathBuf;

use super::descriptor::EndpointOptions;

/// One endpoint to serve, as a descriptor or a `@Websocket` class declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's name, as in `/websockets/v4/service/{name}`.
    pub name: String,
    /// The top-level project folder the declaring file is in.
    pub project: String,
    /// The file that declares it, relative to the workspace root, for logs and listings: a
    /// `*.websocket` descriptor, or a `*websocket.ts` module with a `@Websocket` class.
    pub declared_in: String,
    /// The handler as the descriptor wrote it (for a `@Websocket` class, its module's path).
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The descriptor's description (for a `@Websocket` class, its `description` or `name`).
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
