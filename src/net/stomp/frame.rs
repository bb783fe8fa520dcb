//! STOMP frames (1.0, 1.1, 1.2): reading them from a byte stream that may split or join them
//! anywhere (WebSocket messages carry any part of a frame, or several), and writing them.
//!
//! A frame is `COMMAND EOL (name:value EOL)* EOL body NUL`, EOL being LF or CR LF. The body runs
//! to the first NUL, or for exactly `content-length` bytes when that header is given. A bare EOL
//! between frames is a heart-beat. In 1.1 and 1.2, header names and values escape `\n`, `\c`
//! (colon) and `\\` (and 1.2 `\r`), except in CONNECT and CONNECTED frames; an undefined escape
//! is an error. When a header is repeated, the first one counts.

use bytes::{Buf, Bytes, BytesMut};

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// STOMP 1.0: no header escapes.
    V1_0,
    /// STOMP 1.1.
    V1_1,
    /// STOMP 1.2: `\r` escape, CR LF line ends.
    V1_2,
}

impl Version {
    /// Every version, newest first: the order a server prefers them in.
    pub const NEWEST_FIRST: [Version; 3] = [Version::V1_2, Version::V1_1, Version::V1_0];

    /// `1.2`, as in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The WebSocket subprotocol that names this version (`v12.stomp`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }

    /// The version `1.1` names, if it is one.
    pub fn named(name: &str) -> Option<Version> {
        Version::NEWEST_FIRST
            .into_iter()
            .find(|v| v.as_str() == name.trim())
    }

    /// The newest version a CONNECT's `accept-version` (`1.1,1.0`) offers; 1.0 when the header is
    /// absent (a 1.0 client); `None` when it offers none we speak.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        let Some(offered) = accept_version else {
            return Some(Version::V1_0);
        };
        let offered: Vec<Version> = offered.split(',').filter_map(Version::named).collect();
        Version::NEWEST_FIRST
            .into_iter()
            .find(|v| offered.contains(v))
    }
}

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECT`, `SEND`, `MESSAGE`, ...
    pub command: String,
    /// The headers in order, unescaped; repeats kept (the first counts).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of header `name` (the first, when repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame's bytes for a peer speaking `version`: headers escaped as that version
    /// requires (never in CONNECT/CONNECTED), a `content-length` for a non-empty body, and the
    /// closing NUL.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut writer = FrameWriter::new(&self.command, version, self.body.len());
        for (name, value) in &self.headers {
            writer.header(name, value);
        }
        writer.body(&self.body)
    }
}

/// Writes one frame straight into a buffer, with no [`Frame`] in between: what a frame sent for
/// every message (`MESSAGE`) is written with. The head is text; a text body keeps the whole
/// frame a `String` (no UTF-8 check of what is known to be text).
pub struct FrameWriter {
    /// The head so far.
    out: String,
    /// Whether header text is escaped (1.1 and 1.2, except CONNECT/CONNECTED).
    escaped: bool,
    /// The version, for its escapes.
    version: Version,
    /// Whether a `content-length` header was written.
    has_length: bool,
}

impl FrameWriter {
    /// A frame of `command` for a peer speaking `version`, with room for a body of `body_hint`
    /// bytes.
    pub fn new(command: &str, version: Version, body_hint: usize) -> Self {
        let mut out = String::with_capacity(command.len() + 160 + body_hint);
        out.push_str(command);
        out.push('\n');
        Self {
            out,
            escaped: version > Version::V1_0 && !is_connect(command),
            version,
            has_length: false,
        }
    }

    /// Adds a header.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.has_length |= name == "content-length";
        push_header_text(&mut self.out, name, self.escaped, self.version);
        self.out.push(':');
        push_header_text(&mut self.out, value, self.escaped, self.version);
        self.out.push('\n');
        self
    }

    /// Adds a header whose value is written by `value` (a number, say) and needs no escapes.
    pub fn header_with(&mut self, name: &str, value: std::fmt::Arguments<'_>) -> &mut Self {
        use std::fmt::Write as _;
        self.has_length |= name == "content-length";
        push_header_text(&mut self.out, name, self.escaped, self.version);
        self.out.push(':');
        let _ = self.out.write_fmt(value);
        self.out.push('\n');
        self
    }

    /// Ends the head: a `content-length` for a non-empty body of `length` bytes, then the blank
    /// line.
    fn end_head(&mut self, length: usize) {
        if !self.has_length && length > 0 {
            self.header_with("content-length", format_args!("{length}"));
        }
        self.out.push('\n');
    }

    /// The frame, ending with the text `body` and the NUL.
    pub fn text_body(mut self, body: &str) -> String {
        self.end_head(body.len());
        self.out.push_str(body);
        self.out.push('\0');
        self.out
    }

    /// The frame's bytes, ending with `body` and the NUL.
    pub fn body(mut self, body: &[u8]) -> Vec<u8> {
        self.end_head(body.len());
        let mut out = self.out.into_bytes();
        out.extend_from_slice(body);
        out.push(0);
        out
    }
}

/// Whether a command's headers are never escaped.
fn is_connect(command: &str) -> bool {
    matches!(command, "CONNECT" | "STOMP" | "CONNECTED")
}

fn push_header_text(out: &mut String, text: &str, escaped: bool, version: Version) {
    // Most header text has nothing to escape: copied whole.
    if !escaped
        || !text
            .bytes()
            .any(|b| matches!(b, b'\\' | b'\n' | b':' | b'\r'))
    {
        out.push_str(text);
        return;
    }
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ':' => out.push_str("\\c"),
            '\r' if version == Version::V1_2 => out.push_str("\\r"),
            other => out.push(other),
        }
    }
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// A bare end of line between frames: the peer's heart-beat.
    HeartBeat,
}

/// Why the bytes cannot be read as STOMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More than the limit before the frame's end.
    #[error("frame larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The command line is not a word of capital letters.
    #[error("not a STOMP frame: the command line is {0:?}")]
    BadCommand(String),
    /// A header line without a colon.
    #[error("{command} frame: header line {line:?} has no colon")]
    BadHeader {
        /// The frame's command.
        command: String,
        /// The line.
        line: String,
    },
    /// An escape sequence the version does not define.
    #[error("{command} frame: header {line:?} has the undefined escape sequence \\{escape}")]
    BadEscape {
        /// The frame's command.
        command: String,
        /// The header line.
        line: String,
        /// The character after the backslash.
        escape: char,
    },
    /// Header text that is not UTF-8.
    #[error("{command} frame: a header is not UTF-8")]
    NotUtf8 {
        /// The frame's command.
        command: String,
    },
    /// `content-length` that is not a number.
    #[error("{command} frame: content-length {value:?} is not a number of bytes")]
    BadLength {
        /// The frame's command.
        command: String,
        /// The header's value.
        value: String,
    },
    /// The body of `content-length` bytes is not followed by a NUL.
    #[error("{command} frame: no NUL after the {length} bytes of content-length")]
    NoNulAfterBody {
        /// The frame's command.
        command: String,
        /// The header's value.
        length: usize,
    },
}

/// Reads frames from a stream of bytes that arrive in pieces.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes received and not yet read as frames.
    buffer: BytesMut,
    /// The largest frame accepted, in bytes (headers and body).
    limit: usize,
    /// The version agreed (escapes depend on it); 1.2 rules until CONNECTED says otherwise.
    version: Version,
}

impl FrameReader {
    /// A reader accepting frames of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit,
            version: Version::V1_2,
        }
    }

    /// The version agreed with the peer, for the header escapes of later frames.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Adds bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next frame or heart-beat, `None` until more bytes arrive. After an error the stream
    /// cannot be resynchronised: the caller reports it and closes.
    pub fn next_item(&mut self) -> Result<Option<Item>, FrameError> {
        // Heart-beats: bare line ends before a frame.
        if self.buffer.first() == Some(&b'\n') {
            self.buffer.advance(1);
            return Ok(Some(Item::HeartBeat));
        }
        if self.buffer.starts_with(b"\r\n") {
            self.buffer.advance(2);
            return Ok(Some(Item::HeartBeat));
        }
        if self.buffer.as_ref() == b"\r" {
            return Ok(None);
        }
        let Some(head_end) = find_head_end(&self.buffer) else {
            return self.incomplete();
        };
        let (head, body_start) = head_end;
        let head_text = &self.buffer[..head];
        let mut lines = head_text.split(|b| *b == b'\n').map(|line| match line {
            [rest @ .., b'\r'] => rest,
            line => line,
        });
        let command_line = lines.next().unwrap_or_default();
        let command = String::from_utf8_lossy(command_line).to_string();
        if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FrameError::BadCommand(shorten(&command)));
        }
        let escaped = self.version > Version::V1_0 && !is_connect(&command);
        let mut headers = Vec::new();
        for line in lines {
            let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8 {
                command: command.clone(),
            })?;
            let Some((name, value)) = text.split_once(':') else {
                return Err(FrameError::BadHeader {
                    command,
                    line: shorten(text),
                });
            };
            let unescape = |part: &str| -> Result<String, FrameError> {
                if !escaped {
                    return Ok(part.to_string());
                }
                unescape(part, self.version).map_err(|escape| FrameError::BadEscape {
                    command: command.clone(),
                    line: shorten(text),
                    escape,
                })
            };
            headers.push((unescape(name)?, unescape(value)?));
        }
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| {
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| FrameError::BadLength {
                        command: command.clone(),
                        value: shorten(value),
                    })
            })
            .transpose()?;
        let body_end = match length {
            Some(length) => {
                if body_start + length > self.limit {
                    return Err(FrameError::TooLarge { limit: self.limit });
                }
                if self.buffer.len() < body_start + length + 1 {
                    return Ok(None);
                }
                if self.buffer[body_start + length] != 0 {
                    return Err(FrameError::NoNulAfterBody { command, length });
                }
                body_start + length
            }
            None => match memchr::memchr(0, &self.buffer[body_start..]) {
                Some(nul) => body_start + nul,
                None => return self.incomplete(),
            },
        };
        if body_end > self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        let mut frame_bytes = self.buffer.split_to(body_end + 1);
        let body = frame_bytes.split_off(body_start).freeze();
        Ok(Some(Item::Frame(Frame {
            command,
            headers,
            body: body.slice(..body.len() - 1),
        })))
    }

    /// No complete frame yet: fine unless what is buffered is already past the limit.
    fn incomplete(&self) -> Result<Option<Item>, FrameError> {
        if self.buffer.len() > self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        Ok(None)
    }
}

/// Where a frame's headers end: (the length of the head, without its blank line; where the
/// body starts).
fn find_head_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while let Some(newline) = memchr::memchr(b'\n', &buffer[at..]) {
        let line_end = at + newline;
        let next = line_end + 1;
        // A blank line: "\n" or "\r\n" right after the previous line's end.
        if buffer.get(next) == Some(&b'\n') {
            return Some((line_end, next + 1));
        }
        if buffer.get(next) == Some(&b'\r') && buffer.get(next + 1) == Some(&b'\n') {
            return Some((line_end, next + 2));
        }
        if buffer.get(next).is_none()
            || (buffer.get(next) == Some(&b'\r') && next + 1 == buffer.len())
        {
            return None;
        }
        at = next;
    }
    None
}

/// Header text with its escapes undone; the undefined escape's character on error.
fn unescape(text: &str, version: Version) -> Result<String, char> {
    if !text.contains('\\') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            Some(other) => return Err(other),
            None => return Err(' '),
        }
    }
    Ok(out)
}

/// Text for an error message, at most 80 characters.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 80 {
        return text.to_string();
    }
    let mut short: String = text.chars().take(77).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut FrameReader) -> Result<Vec<Item>, FrameError> {
        let mut items = Vec::new();
        while let Some(item) = reader.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    fn frames(input: &[u8]) -> Result<Vec<Item>, FrameError> {
        let mut reader = FrameReader::new(1024);
        reader.push(input);
        read_all(&mut reader)
    }

    #[test]
    fn reads_frames_heart_beats_and_line_ends() {
        let items = frames(b"\nCONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0\r\nSEND\ndestination:/q\n\nhi\0\n").unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], Item::HeartBeat);
        let Item::Frame(connect) = &items[1] else {
            panic!()
        };
        assert_eq!(connect.command, "CONNECT");
        assert_eq!(connect.get("host"), Some("x"));
        assert_eq!(items[2], Item::HeartBeat);
        let Item::Frame(send) = &items[3] else {
            panic!()
        };
        assert_eq!(send.body.as_ref(), b"hi");
        assert_eq!(items[4], Item::HeartBeat);
    }

    #[test]
    fn content_length_allows_nul_in_the_body_and_first_header_wins() {
        let items =
            frames(b"SEND\ncontent-length:3\ndestination:/a\ndestination:/b\n\na\0b\0").unwrap();
        let Item::Frame(frame) = &items[0] else {
            panic!()
        };
        assert_eq!(frame.body.as_ref(), b"a\0b");
        assert_eq!(frame.get("destination"), Some("/a"));
        assert_eq!(
            frames(b"SEND\ncontent-length:2\n\nabc\0"),
            Err(FrameError::NoNulAfterBody {
                command: "SEND".into(),
                length: 2
            })
        );
    }

    #[test]
    fn frames_split_anywhere_and_joined_are_read_the_same() {
        let input = b"SEND\ndestination:/ws/stomp/e\n\n{\"text\":\"x\"}\0MESSAGE\nx:y\n\n\0";
        for split in 0..input.len() {
            let mut reader = FrameReader::new(1024);
            let mut items = Vec::new();
            reader.push(&input[..split]);
            items.extend(read_all(&mut reader).unwrap());
            reader.push(&input[split..]);
            items.extend(read_all(&mut reader).unwrap());
            assert_eq!(items.len(), 2, "split at {split}");
        }
    }

    #[test]
    fn escapes_by_version_and_never_in_connect() {
        let mut reader = FrameReader::new(1024);
        reader.push(b"SEND\na\\cb:c\\nd\\\\e\\r\n\n\0");
        let Item::Frame(frame) = reader.next_item().unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(frame.headers[0], ("a:b".into(), "c\nd\\e\r".into()));
        let mut reader = FrameReader::new(1024);
        reader.set_version(Version::V1_1);
        reader.push(b"SEND\nh:a\\rb\n\n\0");
        assert!(matches!(
            reader.next_item(),
            Err(FrameError::BadEscape { escape: 'r', .. })
        ));
        let mut reader = FrameReader::new(1024);
        reader.set_version(Version::V1_0);
        reader.push(b"SEND\nh:a\\tb\n\n\0");
        let Item::Frame(frame) = reader.next_item().unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(frame.get("h"), Some("a\\tb"));
        let items = frames(b"CONNECT\nlogin:a\\tb\n\n\0").unwrap();
        let Item::Frame(connect) = &items[0] else {
            panic!()
        };
        assert_eq!(connect.get("login"), Some("a\\tb"));
        // Written: escaped for 1.1 and 1.2, not in CONNECTED.
        let message = Frame::new("MESSAGE").header("a:b", "c\nd\\e\r");
        assert_eq!(
            message.encode(Version::V1_2),
            b"MESSAGE\na\\cb:c\\nd\\\\e\\r\n\n\0".to_vec()
        );
        assert_eq!(
            message.encode(Version::V1_1),
            b"MESSAGE\na\\cb:c\\nd\\\\e\r\n\n\0".to_vec()
        );
        assert_eq!(
            Frame::new("CONNECTED")
                .header("x", "a:b")
                .encode(Version::V1_2),
            b"CONNECTED\nx:a:b\n\n\0".to_vec()
        );
    }

    #[test]
    fn round_trip_with_content_length() {
        let frame = Frame::new("MESSAGE")
            .header("destination", "/user/queue/reply/e")
            .body(&b"a\0b"[..]);
        let mut reader = FrameReader::new(1024);
        reader.push(&frame.encode(Version::V1_2));
        let Item::Frame(read) = reader.next_item().unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(read.body, frame.body);
        assert_eq!(read.get("content-length"), Some("3"));
    }

    #[test]
    fn garbage_and_oversized_frames_are_errors() {
        assert!(matches!(
            frames(b"hello world\n\n\0"),
            Err(FrameError::BadCommand(_))
        ));
        assert!(matches!(
            frames(b"SEND\nno colon here\n\n\0"),
            Err(FrameError::BadHeader { .. })
        ));
        assert!(matches!(
            frames(b"SEND\ncontent-length:abc\n\n\0"),
            Err(FrameError::BadLength { .. })
        ));
        let mut reader = FrameReader::new(64);
        reader.push(b"SEND\ndestination:/q\n\n");
        reader.push(&[b'x'; 100]);
        assert_eq!(reader.next_item(), Err(FrameError::TooLarge { limit: 64 }));
        let mut reader = FrameReader::new(64);
        reader.push(b"SEND\ncontent-length:1000\n\n");
        assert_eq!(reader.next_item(), Err(FrameError::TooLarge { limit: 64 }));
    }

    #[test]
    fn versions_are_negotiated_newest_first() {
        assert_eq!(Version::negotiate(Some("1.1,1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.2,1.1,1.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("2.0")), None);
    }
}
