//! What handlers said (`console.*`, and the errors the runtime reports for them), kept for the
//! web console: the last lines of every handler, and a live stream of new ones. Logging still
//! goes to the server's log as before; this is a bounded copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::event::epoch_millis;

/// How many lines are kept, all handlers together.
const KEPT: usize = 4_000;

/// The longest line kept, in bytes (a handler logging megabytes is cut, with a mark).
const LONGEST_LINE: usize = 16 * 1024;

/// One line a handler logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// Its number, increasing: a reader that missed lines sees the gap.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The handler module (`project/handler.js`).
    pub handler: Arc<str>,
    /// `log`, `info`, `warn`, `error` or `debug`.
    pub level: &'static str,
    /// The text (stack traces included, with workspace paths).
    pub text: String,
}

/// The handlers' recent lines and the live stream of new ones.
#[derive(Debug)]
pub struct LogBook {
    /// The last [`KEPT`] lines.
    recent: Mutex<VecDeque<Arc<LogLine>>>,
    /// The next line's number.
    next: AtomicU64,
    /// New lines, for live readers (a reader too slow for it skips lines, and sees the gap).
    live: broadcast::Sender<Arc<LogLine>>,
}

impl Default for LogBook {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(256)),
            next: AtomicU64::new(1),
            live: broadcast::channel(1024).0,
        }
    }
}

/// The level names, as `'static` strings.
fn level_name(level: &str) -> &'static str {
    match level {
        "error" => "error",
        "warn" => "warn",
        "debug" | "trace" => "debug",
        "info" => "info",
        _ => "log",
    }
}

impl LogBook {
    /// Records a line of `handler`.
    pub fn record(&self, handler: &Arc<str>, level: &str, text: &str) {
        let text = if text.len() > LONGEST_LINE {
            let mut cut = LONGEST_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}… ({} bytes)", &text[..cut], text.len())
        } else {
            text.to_string()
        };
        let line = Arc::new(LogLine {
            seq: self.next.fetch_add(1, Ordering::Relaxed),
            time: epoch_millis(SystemTime::now()),
            handler: handler.clone(),
            level: level_name(level),
            text,
        });
        {
            let mut recent = self.recent.lock();
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        let _ = self.live.send(line);
    }

    /// The last `count` lines of `handler`, oldest first.
    pub fn recent(&self, handler: &str, count: usize) -> Vec<Arc<LogLine>> {
        let recent = self.recent.lock();
        let mut lines: Vec<Arc<LogLine>> = recent
            .iter()
            .rev()
            .filter(|line| &*line.handler == handler)
            .take(count)
            .cloned()
            .collect();
        lines.reverse();
        lines
    }

    /// New lines from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_per_handler_bounded_and_streamed() {
        let book = LogBook::default();
        let a: Arc<str> = "p/a.js".into();
        let b: Arc<str> = "p/b.js".into();
        let mut live = book.subscribe();
        book.record(&a, "log", "one");
        book.record(&b, "error", "two");
        book.record(&a, "weird", &"x".repeat(LONGEST_LINE + 10));
        let of_a = book.recent("p/a.js", 10);
        assert_eq!(of_a.len(), 2);
        assert_eq!(of_a[0].text, "one");
        assert!(of_a[1]
            .text
            .ends_with(&format!("… ({} bytes)", LONGEST_LINE + 10)));
        assert_eq!(of_a[1].level, "log");
        assert_eq!(live.try_recv().unwrap().text, "one");
        assert_eq!(live.try_recv().unwrap().level, "error");
        for i in 0..KEPT {
            book.record(&b, "log", &i.to_string());
        }
        assert!(book.recent("p/a.js", 10).is_empty(), "old lines leave");
        assert_eq!(
            book.recent("p/b.js", 3).last().unwrap().text,
            (KEPT - 1).to_string()
        );
    }
}
