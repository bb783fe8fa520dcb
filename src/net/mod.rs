//! Sockets and frames, for inbound connections and outbound clients alike. Nothing here runs
//! JavaScript: a socket's pump hands events to an [`crate::event::EventSink`], and isolates reach
//! sockets only by id, through the registries.
//!
//! From the bottom up:
//! - [`close`]: close codes and reasons.
//! - [`compression`]: permessage-deflate negotiation (RFC 7692; the codec and frame layer follow).
//! - [`direct`]: writing a frame straight to its socket from the thread that drives it.
//! - [`outbox`]: the bounded outbound queue of one socket, which tries a direct write first.
//! - `batch`: one frame to many sockets per system call, through io_uring (Linux).
//! - [`records`]: a connection as listings show it; why a send failed.
//! - [`connections`]: every open inbound connection, by id, endpoint and topic.
//! - [`home`]: a handler's thread as the place its connections' sockets are driven.
//! - [`plain`]: a WebSocket on plain TCP, driven with the stream's own read and write readiness.
//! - [`movable`]: a TCP stream that moves to a home after its WebSocket has started.
//! - [`pump`]: one socket's task: frames in as events, the outbox out.
//! - [`remote`]: other nodes, as the connection registry hands work to them (a broker links
//!   them: `crate::cluster`).
//! - [`clients`]: outbound clients (`createWebsocket`): options, connecting, their registry.
//! - [`stomp`]: STOMP frames, read from and written to WebSocket messages.

#[cfg(target_os = "linux")]
mod batch;
pub mod clients;
pub mod close;
pub mod compression;
pub mod connections;
pub mod direct;
pub mod home;
pub mod movable;
pub mod outbox;
pub mod plain;
pub mod pump;
pub mod records;
pub mod remote;
pub mod stomp;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The most one `recv` reads. Our tungstenite patch reads into one buffer of this size per thread
/// between frames and keeps only what arrived, so an idle connection holds no read buffer and the
/// size costs memory once per thread, not per connection (idle memory per connection:
/// bench/README.md). 64 KiB takes a 16 KiB message, or a burst of small ones, in one system call;
/// the 8 KiB this was before took a 16 KiB message in three. The rest of a frame that did not
/// arrive whole is read into the connection's own buffer, made the size of that frame.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// The WebSocket settings of a socket (inbound or outbound) whose messages may be up to
/// `max_message_size`.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}
