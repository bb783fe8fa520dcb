//! The commands of the `switchboard` binary, wiring workspace, isolates and server together.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clients::ClientRegistry;
use crate::connections::ConnectionRegistry;
use crate::isolate::{check_handler, IsolateHost};
use crate::limits::Limits;
use crate::reload::Reloader;
use crate::server::{self, AppState};
use crate::stats::Stats;
use crate::workspace::{self, engine_note, EndpointRegistry, WorkspaceScan};

/// Options of `switchboard serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub workspace: PathBuf,
    pub listen: String,
    /// Watch the workspace and apply changes live.
    pub watch: bool,
    /// How long files must stay quiet before a change is applied.
    pub debounce: std::time::Duration,
    /// Limits and timeouts.
    pub limits: Limits,
    /// `(certificate, key)` PEM files to serve https/wss.
    pub tls: Option<(PathBuf, PathBuf)>,
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
    #[error("{file} is outside the workspace {workspace}: pass --workspace with the folder that holds its project")]
    ScriptOutsideWorkspace { file: String, workspace: String },
    #[error("{0}")]
    Script(String),
    #[error("cannot watch the workspace: {0} (--no-watch serves without watching)")]
    Watch(String),
    #[error(transparent)]
    Tls(#[from] server::TlsError),
}

/// How long `run` waits, after its script is done, for handlers to finish their queued events.
const RUN_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `switchboard run FILE`: runs one module, then stays alive while it has timers or pending work
/// or any outbound client is still open, and exits when all of that is over.
pub async fn run_script(file: &Path, workspace: Option<&Path>) -> Result<(), AppError> {
    let file = file.canonicalize().map_err(|source| {
        AppError::Workspace(workspace::WorkspaceError::Unreadable {
            path: file.display().to_string(),
            source,
        })
    })?;
    let root = match workspace {
        Some(workspace) => workspace::canonical_root(workspace)?,
        None => default_script_workspace(&file)?,
    };
    if !file.starts_with(&root) {
        return Err(AppError::ScriptOutsideWorkspace {
            file: file.display().to_string(),
            workspace: root.display().to_string(),
        });
    }
    let connections = Arc::new(ConnectionRegistry::new());
    let clients = Arc::new(ClientRegistry::new());
    let isolates = IsolateHost::new(
        root.clone(),
        connections,
        clients.clone(),
        Default::default(),
        Default::default(),
    );
    let script = isolates
        .isolate_for(&file)
        .await
        .map_err(|e| AppError::Script(e.to_string()))?;
    let finished = async {
        loop {
            script.until_idle().await;
            clients.until_all_finished().await;
            // A client's last events may have given the script new work.
            if script.is_idle() && clients.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        () = finished => tracing::debug!("script finished"),
        () = server::shutdown_signal() => {}
    }
    drop(script);
    isolates.shutdown(RUN_DRAIN_LIMIT).await;
    Ok(())
}

/// `./projects` when it holds the script, otherwise the folder above the script's folder (so
/// that the script's folder is a project of it).
fn default_script_workspace(file: &Path) -> Result<PathBuf, AppError> {
    if let Ok(projects) = workspace::canonical_root(Path::new("projects")) {
        if file.starts_with(&projects) {
            return Ok(projects);
        }
    }
    let folder = file.parent().unwrap_or(file);
    let root = folder.parent().unwrap_or(folder);
    Ok(workspace::canonical_root(root)?)
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

/// `switchboard serve`: scans the workspace, starts every handler, applies workspace changes
/// live (unless told not to), and serves until Ctrl-C/SIGTERM.
pub async fn serve(options: ServeOptions) -> Result<(), AppError> {
    let root = workspace::canonical_root(&options.workspace)?;
    let tls = match &options.tls {
        Some((cert, key)) => Some(server::load_server_tls(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(&options.listen)
        .await
        .map_err(|source| AppError::Listen {
            address: options.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(AppError::Serve)?;
    let (state, reloader) = start(&root, options.limits).await;
    let _watcher = if options.watch {
        let (watcher, mut batches) = workspace::watch::watch(&root, options.debounce)
            .map_err(|e| AppError::Watch(e.to_string()))?;
        tokio::spawn(async move {
            while let Some(mut paths) = batches.recv().await {
                while let Ok(more) = batches.try_recv() {
                    paths.extend(more);
                }
                reloader.apply(&paths).await;
            }
        });
        Some(watcher)
    } else {
        None
    };
    announce(&state, address, options.watch, tls.is_some());
    server::run(listener, tls, state, server::shutdown_signal())
        .await
        .map_err(AppError::Serve)
}

/// Scans the workspace and starts an isolate for every handler, recording load errors.
pub async fn start(root: &Path, limits: Limits) -> (AppState, Arc<Reloader>) {
    let connections = Arc::new(ConnectionRegistry::new());
    let endpoints = Arc::new(EndpointRegistry::new());
    let clients = Arc::new(ClientRegistry::new());
    let limits = Arc::new(limits);
    let stats = Arc::new(Stats::default());
    let isolates = IsolateHost::new(
        root.to_path_buf(),
        connections.clone(),
        clients.clone(),
        limits.clone(),
        stats.clone(),
    );
    let scan = workspace::scan(root);
    log_scan(&scan);
    endpoints.apply(scan);
    let state = AppState {
        workspace_root: root.to_path_buf(),
        endpoints,
        connections,
        clients,
        isolates,
        reloads: Default::default(),
        limits,
        stats,
        shutting_down: Default::default(),
        tasks: Default::default(),
        lifecycle: Default::default(),
    };
    let reloader = Reloader::new(state.clone());
    reloader.start_all().await;
    (state, reloader)
}

/// Prints one line per endpoint served, then the URL to open.
fn announce(state: &AppState, address: SocketAddr, watching: bool, tls: bool) {
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let snapshot = state.endpoints.snapshot();
    for endpoint in snapshot.endpoints.values() {
        let status = match state.endpoints.handler_error(&endpoint.handler_file) {
            Some(_) => " (handler failed to load, see the log)",
            None => "",
        };
        println!(
            "endpoint {:<20} {ws}://{address}/websockets/v4/service/{}  descriptor {}  handler {}{status}",
            endpoint.name, endpoint.name, endpoint.descriptor_file, endpoint.handler
        );
    }
    if snapshot.endpoints.is_empty() {
        println!(
            "no endpoints yet: add a *.websocket descriptor to a project of {}",
            state.workspace_root.display()
        );
    }
    if watching {
        println!(
            "watching {} for changes (--no-watch turns it off)",
            state.workspace_root.display()
        );
    }
    println!("Switchboard is listening: open {http}://{address}/");
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
