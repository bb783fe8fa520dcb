//! STOMP, the protocol Dirigible's browser pages speak to its broker at `/stomp`: frames read
//! from and written to WebSocket messages. What a session does with them (sending to handlers,
//! replies, subscriptions) is the server's (`server/stomp`).

pub mod frame;

pub use frame::{Frame, FrameError, FrameReader, FrameWriter, Item, Version};
