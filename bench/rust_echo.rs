//! switchboard-rust-echo: the ceiling of Switchboard's stack in the benchmark suite: the same
//! tokio + tokio-tungstenite (same 8 KiB read buffer), no JavaScript. Echoes every message; with
//! `--broadcast`, sends every message to all connections instead (built once, shared).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9002".into());
    let broadcast = args.any(|a| a == "--broadcast");
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let peers: Peers = Arc::default();
    let next_id = Arc::new(AtomicU64::new(0));
    let config = WebSocketConfig::default()
        .read_buffer_size(8192)
        .write_buffer_size(0);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (peers, id) = (peers.clone(), next_id.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move {
            let Ok(socket) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let (mut sink, mut stream) = socket.split();
            if !broadcast {
                while let Some(Ok(message)) = stream.next().await {
                    if (message.is_text() || message.is_binary())
                        && sink.send(message).await.is_err()
                    {
                        break;
                    }
                }
                return;
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            peers.lock().insert(id, tx);
            let writer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                if message.is_text() || message.is_binary() {
                    for peer in peers.lock().values() {
                        let _ = peer.send(message.clone());
                    }
                }
            }
            peers.lock().remove(&id);
            writer.abort();
        });
    }
}
