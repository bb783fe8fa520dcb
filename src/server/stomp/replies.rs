//! Dirigible's reply envelope: what a page receives on `/user/queue/reply/{endpoint}`,
//! `{"from": "...", "text": "...", "time": "HH:mm"}` (the server's local time).

use bytes::Bytes;

/// The envelope of `text` from `from`, stamped with the time of day.
pub fn envelope(from: &str, text: &str) -> Bytes {
    serde_json::json!({ "from": from, "text": text, "time": time_of_day() })
        .to_string()
        .into()
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
