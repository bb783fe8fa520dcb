//! The commands of the `switchboard` binary, wiring workspace, isolates and server together.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clients::ClientRegistry;
use crate::connections::ConnectionRegistry;
use crate::isolate::{check_handler, IsolateHost};
use crate::server::{self, AppState};
use crate::workspace::{self, engine_note, EndpointRegistry, WorkspaceScan};

/// Options of `switchboard serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub workspace: PathBuf,
    pub listen: String,
}

/// Errors that stop a command; each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Workspace(#[from] workspace::WorkspaceError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Logs what a scan found that needs the user's attention.
fn log_scan(scan: &WorkspaceScan) {
    for problem in &scan.problems {
        tracing::error!("{}: {} (skipped)", problem.file, problem.message);
    }
    for warning in &scan.warnings {
        tracing::warn!("{}: {}", warning.file, warning.message);
    }
    for engine in &scan.engines {
        tracing::info!("{}", engine_note(engine));
    }
}

/// `switchboard serve`: scans the workspace, starts every handler, and serves until Ctrl-C/SIGTERM.
pub async fn serve(options: ServeOptions) -> Result<(), AppError> {
    let root = workspace::canonical_root(&options.workspace)?;
    let listener = TcpListener::bind(&options.listen)
        .await
        .map_err(|source| AppError::Listen {
            address: options.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(AppError::Serve)?;
    let state = start(&root).await;
    announce(&state, address);
    server::run(listener, state, server::shutdown_signal())
        .await
        .map_err(AppError::Serve)
}

/// Scans the workspace and starts an isolate for every handler, recording load errors.
pub async fn start(root: &Path) -> AppState {
    let connections = Arc::new(ConnectionRegistry::new());
    let endpoints = Arc::new(EndpointRegistry::new());
    let clients = Arc::new(ClientRegistry::new());
    let isolates = IsolateHost::new(root.to_path_buf(), connections.clone(), clients.clone());
    let scan = workspace::scan(root);
    log_scan(&scan);
    endpoints.apply(scan);
    let handlers: BTreeSet<PathBuf> = endpoints
        .snapshot()
        .endpoints
        .values()
        .map(|e| e.handler_file.clone())
        .collect();
    for handler_file in handlers {
        match isolates.isolate_for(&handler_file).await {
            Ok(_) => endpoints.set_handler_error(&handler_file, None),
            Err(error) => {
                tracing::error!("{error}");
                endpoints.set_handler_error(&handler_file, Some(error.to_string()));
            }
        }
    }
    AppState {
        workspace_root: root.to_path_buf(),
        endpoints,
        connections,
        clients,
        isolates,
    }
}

/// Prints one line per endpoint served, then the URL to open.
fn announce(state: &AppState, address: SocketAddr) {
    let snapshot = state.endpoints.snapshot();
    for endpoint in snapshot.endpoints.values() {
        let status = match state.endpoints.handler_error(&endpoint.handler_file) {
            Some(_) => " (handler failed to load, see the log)",
            None => "",
        };
        println!(
            "endpoint {:<20} ws://{address}/websockets/v4/service/{}  descriptor {}  handler {}{status}",
            endpoint.name, endpoint.name, endpoint.descriptor_file, endpoint.handler
        );
    }
    if snapshot.endpoints.is_empty() {
        println!(
            "no endpoints yet: add a *.websocket descriptor to a project of {}",
            state.workspace_root.display()
        );
    }
    println!("Switchboard is listening: open http://{address}/");
}

/// `switchboard check`: every problem of the workspace as `file: problem`. Returns how many.
pub fn check(workspace_path: &Path) -> Result<usize, AppError> {
    let root = workspace::canonical_root(workspace_path)?;
    let scan = workspace::scan(&root);
    let mut problems = 0;
    for problem in &scan.problems {
        println!("{problem}");
        problems += 1;
    }
    for warning in &scan.warnings {
        println!("{}: warning: {}", warning.file, warning.message);
    }
    let handlers: BTreeSet<&PathBuf> = scan.endpoints.values().map(|e| &e.handler_file).collect();
    for handler_file in handlers {
        if let Err(error) = check_handler(handler_file, &root) {
            let file = workspace::relative_display(&root, handler_file);
            if error.starts_with(&format!("{file}:")) {
                println!("{error}");
            } else {
                println!("{file}: {error}");
            }
            problems += 1;
        }
    }
    println!(
        "{} endpoint(s), {problems} problem(s) in {}",
        scan.endpoints.len(),
        workspace_path.display()
    );
    Ok(problems)
}
