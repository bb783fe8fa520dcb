//! Dirigible's reply envelope: what a page receives on `/user/queue/reply/{endpoint}`,
//! `{"from": "...", "text": "...", "time": "HH:mm"}` (the server's local time).

use std::cell::Cell;

/// The envelope of `text` from `from`, stamped with the time of day.
pub fn envelope(from: &str, text: &str) -> String {
    let time = minute_stamp();
    let mut out = String::with_capacity(from.len() + text.len() + 40);
    out.push_str("{\"from\":");
    push_json_string(&mut out, from);
    out.push_str(",\"text\":");
    push_json_string(&mut out, text);
    out.push_str(",\"time\":\"");
    // Always ASCII digits and a colon.
    out.push_str(std::str::from_utf8(&time).unwrap_or("00:00"));
    out.push_str("\"}");
    out
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it (quote, backslash, control
/// characters). Our own because every reply carries the handler's whole answer: runs without
/// anything to escape are found eight bytes at a time and copied whole, where serde_json looks
/// at each byte (a sixth of the server's time on 16 KiB replies).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    loop {
        let clean = clean_prefix(rest.as_bytes());
        out.push_str(&rest[..clean]);
        let Some(special) = rest[clean..].chars().next() else {
            break;
        };
        match special {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            control => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", control as u32);
            }
        }
        rest = &rest[clean + 1..];
    }
    out.push('"');
}

/// How many bytes at the start of `bytes` need no escape in a JSON string (all but `"`, `\` and
/// bytes below 0x20; the bytes of other characters are all 0x20 or more).
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether some byte of `word` is zero (exact as to whether, not as to which).
    fn has_zero(word: u64) -> bool {
        word.wrapping_sub(ONES) & !word & HIGHS != 0
    }
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        // A byte below 0x20: its value minus 0x20 borrows into the high bit while its own high
        // bit is clear.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
        if control
            || has_zero(word ^ (ONES * b'"' as u64))
            || has_zero(word ^ (ONES * b'\\' as u64))
        {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .unwrap_or(bytes.len() - at)
}

thread_local! {
    /// The minute (seconds since the epoch / 60) last stamped on this thread, and its `HH:mm`:
    /// every reply carries the time, and it changes once a minute.
    static LAST_MINUTE: Cell<(u64, [u8; 5])> = const { Cell::new((u64::MAX, [0; 5])) };
}

/// `HH:mm` for now, converted to local time once per minute per thread.
fn minute_stamp() -> [u8; 5] {
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0);
    LAST_MINUTE.with(|last| {
        let (stamped, text) = last.get();
        if stamped == minute {
            return text;
        }
        let mut fresh = [0u8; 5];
        fresh.copy_from_slice(time_of_day().as_bytes().get(..5).unwrap_or(b"00:00"));
        last.set((minute, fresh));
        fresh
    })
}

/// `HH:mm`, the server's local time, as Dirigible stamps replies.
pub fn time_of_day() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `libc::tm` is a plain C struct of integers (and a pointer `localtime_r` sets), for
    // which all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_r` reads `now` and writes only into `tm`, both alive on this frame; the
    // result is checked for null before `tm` is used.
    let converted = unsafe { libc::localtime_r(&now, &mut tm) };
    if converted.is_null() {
        let seconds_of_day = now.rem_euclid(86_400);
        return format!(
            "{:02}:{:02}",
            seconds_of_day / 3600,
            seconds_of_day % 3600 / 60
        );
    }
    format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json() {
        let mut samples: Vec<String> = [
            "",
            "plain",
            "quote \" in",
            "back\\slash",
            "line\nbreak\r\t\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}",
            "é ü 日本 😀",
            "\"\"\"\"\"\"\"\"\"",
            "12345678\"12345678\\",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every byte value below 0x80 at every position of a 17-byte string.
        for special in 0u8..0x80 {
            for at in 0..17 {
                let mut text = "abcdefghijklmnopq".to_string().into_bytes();
                text[at] = special;
                samples.push(String::from_utf8(text).unwrap());
            }
        }
        samples.push("x".repeat(16 * 1024) + "\"");
        for text in samples {
            let mut ours = String::new();
            push_json_string(&mut ours, &text);
            assert_eq!(ours, serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn the_envelope_is_dirigibles() {
        let body = envelope("Test user", "Hello [x]");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["from"], "Test user");
        assert_eq!(value["text"], "Hello [x]");
        let time = value["time"].as_str().unwrap();
        assert_eq!(time.len(), 5, "{time}");
        assert_eq!(&time[2..3], ":");
    }
}
