//! What happens to the workspace's endpoints over time: bound (`onStart`, ticks) and unbound
//! (`onStop`) by the [`lifecycle`], and rebound, reloaded or removed by the [`reloader`] as the
//! workspace changes; with `serve --load lazy --unload-idle`, the [`unloader`] unloads handlers
//! nothing uses. [`Runtime`] is everything a running Switchboard holds; the reloader changes it,
//! the server reads it.

pub mod lifecycle;
pub mod reloader;
pub mod runtime;
pub mod unloader;

pub use lifecycle::Lifecycle;
pub use reloader::Reloader;
pub use runtime::{Loading, Runtime};
