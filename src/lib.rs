//! Switchboard: a scriptable WebSocket integration runtime.
//!
//! Data flows one way: the [`workspace`] is scanned into an [`workspace::EndpointRegistry`]; the
//! [`server`] accepts upgrades for its endpoints; each handler module runs in its own
//! [`isolate`], whose thread also drives that handler's connections; the [`api`] ops send back
//! through the [`connections`] registry. Outbound [`clients`] are driven by the network side;
//! [`socket`] pumps both kinds of socket. [`app`] wires them together for the command line.

pub mod api;
pub mod app;
pub mod clients;
pub mod connections;
pub mod direct;
pub mod isolate;
pub mod lifecycle;
pub mod limits;
pub mod outbox;
pub mod reload;
pub mod server;
pub mod socket;
pub mod stats;
pub mod workspace;
