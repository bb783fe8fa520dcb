//! The workspace: project folders holding `*.websocket` descriptors (or `@Websocket` classes) and
//! their handler modules.
//!
//! From the bottom up:
//! - [`paths`]: the one resolver every file the runtime opens for a user goes through.
//! - [`typescript`]: TypeScript modules transpiled (types removed, decorators), cached.
//! - [`modules`]: module kinds, built-in module names, the record of module files an isolate read.
//! - [`descriptor`]: one `*.websocket` file, parsed and checked.
//! - [`decorated`]: `@Websocket` classes declared in `*websocket.ts` modules.
//! - [`endpoint`]: what a scan finds: endpoints and problems.
//! - [`scan`]: every descriptor and `@Websocket` class of the workspace, as endpoints and problems.
//! - [`registry`]: the endpoints being served (the single source of truth).
//! - [`watch`]: file-system changes, debounced.

pub mod decorated;
pub mod descriptor;
pub mod endpoint;
pub mod modules;
pub mod paths;
pub mod registry;
pub mod scan;
pub mod typescript;
pub mod watch;

pub use descriptor::{resolve_handler, EndpointOptions, Instances};
pub use endpoint::{Endpoint, Problem};
pub use paths::{WorkspaceError, WorkspacePaths};
pub use registry::{EndpointRegistry, RegistryState};
pub use scan::{scan, WorkspaceScan};
