//! Everything that names deno_core: one isolate per handler module (or per instance of it), each
//! on its own OS thread
//! with its own current-thread tokio runtime, which also drives the sockets of the handler's
//! connections (see `net::home`).
//!
//! From the bottom up:
//! - [`ops`]: the extension behind the JavaScript API; reaches the runtime only through the
//!   services it is given.
//! - [`watchdog`]: stops JavaScript that runs too long, and records why an isolate was stopped.
//! - `loader`: deno_core's module loader over the workspace's resolver.
//! - `engine`: a `JsRuntime` with the ops and the runtime's JavaScript (`runtime_js/`).
//! - `error_text`: engine errors as `file:line:column: message`.
//! - `load`: loading a handler module (and `switchboard check`).
//! - `dispatch`: events pushed into JavaScript by direct calls; replies taken as return values.
//! - `runtime`: one isolate's thread and its loop.
//! - [`slot`]: a handler as connections see it (an [`crate::event::EventSink`]).
//! - [`host`]: starting, reloading and stopping isolates.

mod dispatch;
mod engine;
mod error_text;
pub mod host;
mod load;
mod loader;
pub mod ops;
mod runtime;
pub mod slot;
pub mod watchdog;

pub use engine::{init_engine, ENGINE_NAME};
pub use host::IsolateHost;
pub use slot::{Delivery, HandlerSlot, InstanceSink};
