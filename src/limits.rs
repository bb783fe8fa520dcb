//! The server's limits and timeouts, with the defaults a production deployment starts from.

use std::time::Duration;

/// Bounds of one socket's outbound queue: a peer that stops reading is closed with 1008 once
/// either is reached, rather than letting memory grow without bound.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    /// Messages that may wait.
    pub messages: usize,
    /// Bytes that may wait (one larger message still passes an empty queue).
    pub bytes: usize,
}

impl Default for QueueBounds {
    fn default() -> Self {
        Self {
            messages: 1_000,
            bytes: 16 << 20,
        }
    }
}

/// permessage-deflate (RFC 7692) for an endpoint: the descriptor's `compression` (with
/// `compressionWindowBits`), or `serve --compression` for endpoints that do not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionMode {
    /// No compression: offers are declined (the default, as in Bun and ws).
    #[default]
    Off,
    /// No context takeover in either direction: one compressor per thread serves every
    /// connection (a broadcast is compressed once), and an idle connection holds no compression
    /// state.
    Shared,
    /// Context takeover both ways, with this window (8-15) for what this side compresses: a better
    /// ratio for chatty peers, at a window's memory per connection (bounded by
    /// [`Limits::compression_memory`]).
    Dedicated {
        /// The window this side compresses with, in bits.
        window_bits: u8,
    },
}

impl CompressionMode {
    /// The window a dedicated compressor uses unless told otherwise.
    pub const DEFAULT_WINDOW_BITS: u8 = 15;

    /// Reads `off`, `shared` or `dedicated` (with `window_bits`, 8-15, for dedicated only).
    pub fn parse(name: &str, window_bits: Option<u8>) -> Result<Self, String> {
        let mode = match name {
            "off" => Self::Off,
            "shared" => Self::Shared,
            "dedicated" => Self::Dedicated {
                window_bits: window_bits.unwrap_or(Self::DEFAULT_WINDOW_BITS),
            },
            other => {
                return Err(format!(
                    "unknown compression {other:?}: use \"off\", \"shared\" or \"dedicated\""
                ))
            }
        };
        match (mode, window_bits) {
            (Self::Dedicated { .. }, Some(bits)) if !(8..=15).contains(&bits) => {
                Err(format!("the window is 8 to 15 bits, got {bits}"))
            }
            (Self::Dedicated { .. }, _) | (_, None) => Ok(mode),
            (_, Some(_)) => Err(format!(
                "a window size applies to \"dedicated\" compression only, not {name:?}"
            )),
        }
    }

    /// The name the descriptor and the command line use.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Shared => "shared",
            Self::Dedicated { .. } => "dedicated",
        }
    }
}

/// Limits that apply to every endpoint unless its descriptor says otherwise.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted from a peer; a larger one closes the connection with 1009.
    pub max_message_size: usize,
    /// Most connections open at once, over all endpoints; more get HTTP 503.
    pub max_connections: usize,
    /// Outbound queue of each connection and client.
    pub send_queue: QueueBounds,
    /// How long one event may run in a handler before it is terminated.
    pub event_time: Duration,
    /// Heap of one handler isolate; a handler that allocates past it is terminated.
    pub isolate_heap: usize,
    /// A ping is sent this often; `None` turns keepalive off.
    pub ping_interval: Option<Duration>,
    /// A peer that sends nothing (not even a pong) for this long after a ping is closed with 1001.
    pub pong_timeout: Duration,
    /// Graceful shutdown gives up waiting after this long.
    pub shutdown_timeout: Duration,
    /// How long an HTTP client may take to send a request's headers, counted from when the server
    /// starts waiting for them: a new connection that stays silent, or one idle between requests
    /// (before any upgrade), is closed when it runs out.
    pub header_timeout: Duration,
    /// Origins allowed on every endpoint without `allowedOrigins` (empty: any).
    pub allowed_origins: Vec<String>,
    /// permessage-deflate for endpoints whose descriptor does not choose.
    pub compression: CompressionMode,
    /// Messages shorter than this are sent uncompressed even where compression is on (deflate
    /// cannot gain much on them, and costs the same per call).
    pub compression_min_bytes: usize,
    /// zlib's level when compressing, 1 (fastest) to 9 (smallest). Measured on 1 KiB JSON: 1
    /// gives 3.0:1, 6 gives 3.9:1 at about 1.6 times the server's time per message.
    pub compression_level: u8,
    /// Most memory all dedicated compression windows may take together; past it, new
    /// connections that ask for dedicated compression get shared compression.
    pub compression_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_connections: 10_000,
            send_queue: QueueBounds::default(),
            event_time: Duration::from_secs(5),
            isolate_heap: 128 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            compression: CompressionMode::Off,
            compression_min_bytes: 256,
            compression_level: 1,
            compression_memory: 256 << 20,
        }
    }
}

impl Limits {
    /// Whether `origin` (a browser's `Origin` header) may connect given an allow-list.
    pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        allowed.iter().any(|a| a == "*" || *a == origin)
    }
}
