//! Dirigible's reply envelope: what a page receives on `/user/queue/reply/{endpoint}`,
//! `{"from": "...", "text": "...", "time": "HH:mm"}` (the server's local time).

use std::cell::Cell;

/// The envelope's fields, serialized in this order.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    /// The sender's nickname (or, for a push, the endpoint).
    from: &'a str,
    /// The handler's answer.
    text: &'a str,
    /// `HH:mm`.
    time: &'a str,
}

/// The envelope of `text` from `from`, stamped with the time of day.
pub fn envelope(from: &str, text: &str) -> Vec<u8> {
    let time = minute_stamp();
    let mut out = Vec::with_capacity(from.len() + text.len() + 40);
    let envelope = Envelope {
        from,
        text,
        // Always ASCII digits and a colon.
        time: std::str::from_utf8(&time).unwrap_or("00:00"),
    };
    // Serializing three strings into a vector cannot fail.
    let _ = serde_json::to_writer(&mut out, &envelope);
    out
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
    fn the_envelope_is_dirigibles() {
        let body = envelope("Test user", "Hello [x]");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["from"], "Test user");
        assert_eq!(value["text"], "Hello [x]");
        let time = value["time"].as_str().unwrap();
        assert_eq!(time.len(), 5, "{time}");
        assert_eq!(&time[2..3], ":");
    }
}
