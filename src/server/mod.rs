//! HTTP and WebSocket serving: the accept loop (plain or TLS), routing, upgrades to endpoints,
//! one connection's life, the listings and projects' pages, `/metrics`, and graceful shutdown.
//!
//! - [`state`]: what request handlers share.
//! - `routes`: which URL is served by what.
//! - `upgrade` and `connection`: a WebSocket upgrade, and the connection's life after it.
//! - `console`: the web console at `/` (access rule, live feed, actions).
//! - `pages` and `metrics`: plain HTTP; `files`: reading projects' static files, bounded.
//! - `stomp`: Dirigible's STOMP broker at `/stomp` (and SockJS) for browser pages.
//! - `tls`: the certificate for https and wss.
//! - `accept`: the accept loop; `shutdown`: graceful shutdown; `trim`: memory given back after
//!   a storm of sockets.

mod accept;
mod connection;
pub mod console;
mod files;
mod metrics;
mod pages;
mod routes;
mod shutdown;
pub mod state;
mod stomp;
mod tls;
mod trim;
mod upgrade;

pub use accept::run;
pub use routes::router;
pub use shutdown::shutdown_signal;
pub use state::AppState;
pub use tls::{load_server_tls, TlsError};
