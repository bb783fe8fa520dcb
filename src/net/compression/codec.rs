//! permessage-deflate, the bytes (RFC 7692 section 7.2): a message is compressed as raw DEFLATE
//! ending in an empty stored block whose last four bytes (`00 00 ff ff`) are left off; the
//! receiver puts them back before inflating. Without context takeover each message starts with an
//! empty window; with it, the window carries over from message to message.
//!
//! Inflating is bounded: it stops with [`InflateError::TooLarge`] as soon as the output would pass
//! the limit, so a small frame that inflates to gigabytes costs at most the limit (and one byte),
//! never the whole.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The four bytes an empty stored block ends with, which the sender leaves off.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The least a message's buffer grows by while inflating.
const INFLATE_CHUNK: usize = 16 * 1024;

/// zlib cannot compress raw DEFLATE with a 256-byte window: a peer that allows 8 bits gets 9
/// (its window is "at most" the size, and a 9-bit stream inflates within 15 bits anyway, as every
/// implementation that accepts 8 does).
fn compress_bits(window_bits: u8) -> u8 {
    window_bits.clamp(9, super::MAX_WINDOW_BITS)
}

/// Compresses the messages of one direction.
#[derive(Debug)]
pub struct Deflater {
    /// The zlib stream.
    stream: Compress,
    /// Whether the window carries over to the next message.
    takeover: bool,
}

impl Deflater {
    /// A compressor with a window of `window_bits` (8-15), keeping it between messages when
    /// `takeover`, at the fastest level.
    pub fn new(window_bits: u8, takeover: bool) -> Self {
        Self::with_level(window_bits, takeover, 1)
    }

    /// The same at zlib's `level` (1 fastest to 9 smallest).
    pub fn with_level(window_bits: u8, takeover: bool, level: u8) -> Self {
        Self {
            stream: Compress::new_with_window_bits(
                Compression::new(u32::from(level.clamp(1, 9))),
                false,
                compress_bits(window_bits),
            ),
            takeover,
        }
    }

    /// Appends the compressed form of `message` to `out` (RFC 7692's payload, tail removed).
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut offset = 0;
        out.reserve(message.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.stream.total_in();
            // A sync flush ends the message on a byte boundary with the empty stored block.
            self.stream
                .compress_vec(&message[offset..], out, FlushCompress::Sync)
                .expect("deflate with a valid window and level does not fail");
            offset += (self.stream.total_in() - before) as usize;
            // Done when all input is in and the flush did not fill the buffer.
            if offset == message.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.len() == start {
            // Nothing to flush (an empty message right after another, with context takeover):
            // an empty stored block, whose tail is left off, is the single byte 0x00 (section
            // 7.2.3.6).
            out.push(0x00);
        } else {
            debug_assert!(out[start..].ends_with(&TAIL));
            out.truncate(out.len() - TAIL.len());
            // An empty message compresses to a single 0x00 byte here too.
            if out.len() == start {
                out.push(0x00);
            }
        }
        if !self.takeover {
            self.stream.reset();
        }
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message-size limit (close 1009).
    #[error("the message inflates past the limit of {0} bytes")]
    TooLarge(usize),
    /// The bytes are not valid DEFLATE data (close 1007, invalid payload data).
    #[error("the compressed message is not valid DEFLATE data: {0}")]
    Corrupt(String),
}

/// Inflates the messages of one direction.
#[derive(Debug)]
pub struct Inflater {
    /// The zlib stream.
    stream: Decompress,
    /// Whether the window carries over to the next message.
    takeover: bool,
}

impl Inflater {
    /// An inflater for a peer compressing with `window_bits` (8-15), keeping the window between
    /// messages when `takeover`.
    pub fn new(window_bits: u8, takeover: bool) -> Self {
        // A larger window inflates a stream made with a smaller one; 8 is not accepted by zlib.
        Self {
            stream: Decompress::new_with_window_bits(false, compress_bits(window_bits)),
            takeover,
        }
    }

    /// Appends the inflated `compressed` message to `out`, failing once it would pass `limit`
    /// bytes (counted from `out`'s length on entry).
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let start = out.len();
        // A first guess at the size (JSON inflates about four to one); `out` then grows by
        // doubling, never past the limit and one byte, which is how passing it is seen.
        out.reserve_exact((compressed.len() * 4).clamp(64, limit + 1));
        let outcome = self
            .inflate_part(compressed, limit, start, out)
            .and_then(|()| self.inflate_part(&TAIL, limit, start, out));
        if outcome.is_err() || !self.takeover {
            self.stream.reset(false);
        }
        outcome
    }

    /// Inflates `input` completely (or up to the limit) into `out`'s spare room, growing it as
    /// needed: zlib writes straight into the message's buffer (no zeroed chunk, no copy).
    fn inflate_part(
        &mut self,
        input: &[u8],
        limit: usize,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let mut offset = 0;
        loop {
            let produced = out.len() - start;
            if produced > limit {
                return Err(InflateError::TooLarge(limit));
            }
            if out.len() == out.capacity() {
                // Double what is there (at least a chunk), but never past the limit and one byte.
                let room = produced.max(INFLATE_CHUNK).min(limit + 1 - produced);
                out.reserve_exact(room);
            }
            let before_in = self.stream.total_in();
            let spare = out.capacity() - out.len();
            let status = self
                .stream
                .decompress_vec(&input[offset..], out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let read = (self.stream.total_in() - before_in) as usize;
            let written = out.len() - start - produced;
            offset += read;
            if out.len() - start > limit {
                return Err(InflateError::TooLarge(limit));
            }
            // Done when all input is in and zlib did not fill the room it had (it has nothing
            // more to give), or the stream ended, or nothing moved.
            let input_done = offset == input.len() && written < spare;
            if status == Status::StreamEnd || input_done || (read == 0 && written == 0) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(deflater: &mut Deflater, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        deflater.compress(text, &mut out);
        out
    }

    fn inflate(inflater: &mut Inflater, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        inflater.inflate(bytes, 1 << 20, &mut out).unwrap();
        out
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        // Section 7.2.3.1: "Hello" compressed, and the same with no compression (stored).
        let mut inflater = Inflater::new(15, false);
        assert_eq!(
            inflate(&mut inflater, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            b"Hello"
        );
        assert_eq!(
            inflate(
                &mut inflater,
                &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]
            ),
            b"Hello"
        );
        // Section 7.2.3.2: with context takeover, the second "Hello" refers to the first.
        let mut taking_over = Inflater::new(15, true);
        assert_eq!(
            inflate(
                &mut taking_over,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            ),
            b"Hello"
        );
        assert_eq!(
            inflate(&mut taking_over, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
            b"Hello"
        );
        // Section 7.2.3.6: an empty message is one 0x00 byte.
        assert_eq!(inflate(&mut inflater, &[0x00]), b"");
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover_at_every_window() {
        let json = br#"{"type":"message","from":12,"text":"hello everyone, how are you today?"}"#;
        for bits in 8..=15 {
            for takeover in [false, true] {
                let mut deflater = Deflater::new(bits, takeover);
                let mut inflater = Inflater::new(bits, takeover);
                let first = deflate(&mut deflater, json);
                assert!(!first.ends_with(&TAIL));
                assert_eq!(inflate(&mut inflater, &first), json, "bits {bits}");
                let second = deflate(&mut deflater, json);
                if takeover {
                    assert!(second.len() < first.len() / 2, "the window carries over");
                } else {
                    assert_eq!(second, first, "each message starts afresh");
                }
                assert_eq!(inflate(&mut inflater, &second), json);
                let empty = deflate(&mut deflater, b"");
                assert_eq!(inflate(&mut inflater, &empty), b"");
                let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
                let compressed = deflate(&mut deflater, &big);
                assert_eq!(inflate(&mut inflater, &compressed), big);
            }
        }
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit_without_inflating_it_all() {
        // An attacker compresses as hard as zlib can: 64 MiB of zeros in about 64 KiB.
        let mut best = Compress::new_with_window_bits(Compression::best(), false, 15);
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = Vec::with_capacity(1 << 20);
        best.compress_vec(&zeros, &mut bomb, FlushCompress::Sync)
            .unwrap();
        let mut deflater = Deflater::new(15, false);
        assert!(
            bomb.len() < 100 << 10,
            "64 MiB of zeros compress to {} bytes",
            bomb.len()
        );
        let mut inflater = Inflater::new(15, false);
        let mut out = Vec::new();
        let limit = 1 << 20;
        assert_eq!(
            inflater.inflate(&bomb, limit, &mut out),
            Err(InflateError::TooLarge(limit))
        );
        assert!(out.capacity() <= limit + 1, "{}", out.capacity());
        // The inflater is usable again after the refusal.
        let hello = deflate(&mut deflater, b"hello");
        assert_eq!(inflate(&mut inflater, &hello), b"hello");
        // Garbage is an error, not a panic.
        let mut out = Vec::new();
        assert!(matches!(
            inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0xff], limit, &mut out),
            Err(InflateError::Corrupt(_))
        ));
    }
}
