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
pub mod pump;
pub mod records;
pub mod remote;
pub mod stomp;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The most one `recv` reads: 8 KiB reads a 16 KiB message in two or three system calls instead
/// of four or five (6 % more 16 KiB echoes over 100 connections than 4 KiB). tokio-tungstenite's
/// default (128 KiB, allocated per connection) cost memory and speed. Our tungstenite patch reads
/// into one such buffer per thread between frames, so an idle connection holds none (idle memory per
/// connection: bench/README.md).
const READ_BUFFER_SIZE: usize = 8192;

/// The WebSocket settings of a socket (inbound or outbound) whose messages may be up to
/// `max_message_size`.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}
