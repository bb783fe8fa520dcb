//! Test support: a workspace in a temporary folder, the real `switchboard` binary serving it on
//! an ephemeral loopback port, a WebSocket client, and a minimal HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in the tests is bounded by this, so a broken server fails a test instead of hanging it.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A temporary workspace of project folders.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary workspace"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` at `relative`, creating folders.
    pub fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// A descriptor `project/name.websocket` binding `endpoint` to `handler`.
    pub fn endpoint(&self, project: &str, endpoint: &str, handler: &str) -> &Self {
        self.write(
            &format!("{project}/{endpoint}.websocket"),
            &format!(r#"{{"handler": "{handler}", "endpoint": "{endpoint}", "description": "test {endpoint}"}}"#),
        )
    }
}

/// Lines a child process printed, shared with the thread reading them.
#[derive(Clone, Default)]
pub struct Output {
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Output {
    pub fn capture(self, stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let (store, signal) = &*lines;
                store.lock().unwrap().push(line);
                signal.notify_all();
            }
        });
        self
    }

    pub fn text(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// How many lines so far satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&str) -> bool) -> usize {
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| predicate(l))
            .count()
    }

    /// Waits until `n` lines satisfy `predicate`.
    pub fn wait_for_count(&self, what: &str, n: usize, predicate: impl Fn(&str) -> bool) {
        let (store, signal) = &*self.lines;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut lines = store.lock().unwrap();
        loop {
            if lines.iter().filter(|l| predicate(l)).count() >= n {
                return;
            }
            let now = std::time::Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {n} x {what}; output so far:\n{}",
                lines.join("\n")
            );
            lines = signal.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Waits until a line satisfies `predicate` and returns it.
    pub fn wait_for(&self, what: &str, predicate: impl Fn(&str) -> bool) -> String {
        let (store, signal) = &*self.lines;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut lines = store.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| predicate(l)) {
                return line.clone();
            }
            let now = std::time::Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; output so far:\n{}",
                lines.join("\n")
            );
            lines = signal.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

/// The switchboard binary: this build's, or the one `SWITCHBOARD_TEST_BINARY` names (to run the
/// black-box tests against another build, such as an earlier one for a before/after figure).
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")))
}

/// A running `switchboard serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub address: String,
    pub stdout: Output,
    pub stderr: Output,
}

impl Server {
    pub fn start(workspace: &Path) -> Server {
        Self::start_with(workspace, &[])
    }

    pub fn start_with(workspace: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(workspace, extra, &[])
    }

    /// [`Server::start_with`], with environment variables for the server.
    pub fn start_with_env(workspace: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(binary())
            .arg("serve")
            .arg(workspace)
            .args(listen)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let stdout = Output::default().capture(child.stdout.take().unwrap());
        let stderr = Output::default().capture(child.stderr.take().unwrap());
        let line = stdout.wait_for("the listening line", |l| {
            l.contains("Switchboard is listening")
        });
        let address = line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix('/'))
            .expect("address in the listening line")
            .to_string();
        Server {
            child,
            address,
            stdout,
            stderr,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of the server's `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`: the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().strip_suffix("kB")?.trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Sends a signal (`TERM`, `INT`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the server process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ws_url(&self, endpoint: &str) -> String {
        format!("ws://{}/websockets/v4/service/{endpoint}", self.address)
    }

    pub async fn connect(&self, endpoint: &str) -> Client {
        connect(&self.ws_url(endpoint)).await
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http_get(&self.address, path).await
    }

    /// One value of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.get("/metrics").await.body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{metrics}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Whether it exited by itself tells a crash from a test failure.
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failing test shows what the server said, so a failure seen once in CI explains
            // itself.
            eprintln!(
                "--- server log ({}) ---\n{}\n--- end of server log ---",
                match exited {
                    Some(status) => format!("it had exited by itself: {status}"),
                    None => "it was still running".to_string(),
                },
                self.stderr.text()
            );
        }
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    client
}

/// The next data or close message, skipping pings and pongs.
pub async fn next_message(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("timed out waiting for a message")
            .expect("connection ended")
            .expect("read error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// Expects the next message to be a close frame with this code and reason.
pub async fn expect_close(client: &mut Client, code: u16, reason: &str) {
    match next_message(client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), code, "reason: {}", frame.reason);
            assert_eq!(frame.reason.as_str(), reason);
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
}

pub async fn next_text(client: &mut Client) -> String {
    match next_message(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub async fn send_text(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("send");
}

/// Sends `text` and returns the text reply.
pub async fn ask(client: &mut Client, text: &str) -> String {
    send_text(client, text).await;
    next_text(client).await
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// A GET over a fresh connection (`Connection: close`), enough for status, headers and body.
pub async fn http_get(address: &str, path: &str) -> HttpResponse {
    let work = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, work)
        .await
        .expect("HTTP GET timed out");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The reload log line for `what` (one line per applied change).
pub fn reloaded(what: &str) -> impl Fn(&str) -> bool + '_ {
    move |line: &str| line.contains("reload in ") && line.contains(what)
}

/// Runs `switchboard check` on `workspace`: (exit code, stdout).
pub fn run_check(workspace: &Path) -> (i32, String) {
    let output = Command::new(binary())
        .arg("check")
        .arg(workspace)
        .output()
        .expect("run switchboard check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

/// An upgrade request with extra headers; returns the client or the HTTP refusal (status, body).
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
    {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string(),
        )),
        Err(other) => panic!("connect to {url}: {other}"),
    }
}
