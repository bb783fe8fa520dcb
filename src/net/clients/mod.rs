//! Outbound WebSocket clients (`createWebsocket`).
//!
//! Like inbound connections, clients belong to the network side: an isolate holds only a client's
//! id, and `send`/`close` from any isolate go through the [`ClientRegistry`] to the client's
//! queue. A new client is a [`ClientConnection`] until someone runs it with the event sink of its
//! handler (the isolate layer does, once the handler's isolate runs).
//!
//! - [`options`]: the options object.
//! - [`registry`]: every live client.
//! - `tls`: whom a `wss://` client trusts.
//! - [`connect`]: creating a client, connecting it and pumping it, with 4D's event order.

pub mod connect;
pub mod options;
pub mod registry;
mod tls;

pub use connect::{create, ClientConnection, ClientRequest};
pub use options::{ClientOptions, DataType};
pub use registry::{ClientError, ClientInfo, ClientRegistry, ClientStatus, ClientSummary};
