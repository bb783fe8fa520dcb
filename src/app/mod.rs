//! The commands of the `switchboard` binary (`serve`, `run`, `check`, `types`, `new`), wiring the layers
//! together. Errors here are `anyhow` chains with context, printed by `main` as one line; the
//! layers below keep typed errors.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::cluster::{Broker, Cluster, RedisBroker};
use crate::endpoints::unloader::unload_idle_handlers;
use crate::endpoints::{Loading, Reloader, Runtime};
use crate::isolate::ENGINE_NAME;
use crate::limits::Limits;
use crate::server::console::ConsoleAccess;
use crate::server::{self, AppState};
use crate::workspace::{self, Instances, WorkspacePaths, WorkspaceScan};

mod new_project;
mod types;
pub use new_project::{new_project, NewProject};
pub use types::{write_types, TYPE_DECLARATIONS, TYPE_DECLARATIONS_FILE};

/// Options of `switchboard serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The workspace folder.
    pub workspace: PathBuf,
    /// The address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Watch the workspace and apply changes live.
    pub watch: bool,
    /// How long files must stay quiet before a change is applied.
    pub debounce: Duration,
    /// When handlers load.
    pub loading: Loading,
    /// Limits and timeouts.
    pub limits: Limits,
    /// `(certificate, key)` PEM files to serve https/wss.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The broker linking this node with others, if any.
    pub broker: Option<BrokerOptions>,
    /// This node's name (default: host name and listening port).
    pub node_name: Option<String>,
    /// The token the web console requires, if any.
    pub console_token: Option<String>,
    /// Whether to serve the web console (on loopback, or with a token).
    pub console: bool,
}

/// Where the nodes of one application meet.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// `redis://...` or `rediss://...`.
    pub url: String,
    /// Prefix of every channel and key, so applications can share one broker.
    pub prefix: String,
}

/// How long a stopping node waits to say bye to the others.
const BYE_LIMIT: Duration = Duration::from_secs(1);

/// How long `run` waits, after its script is done, for handlers to finish their queued events.
const RUN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// `switchboard run FILE`: runs one module, then stays alive while it has timers or pending work
/// or any outbound client is still open, and exits when all of that is over.
pub async fn run_script(file: &Path, workspace: Option<&Path>) -> anyhow::Result<()> {
    let file = file
        .canonicalize()
        .with_context(|| format!("cannot read {}", file.display()))?;
    let paths = match workspace {
        Some(workspace) => WorkspacePaths::new(workspace)?,
        None => default_script_workspace(&file)?,
    };
    if !file.starts_with(paths.root()) {
        bail!(
            "{} is outside the workspace {}: pass --workspace with the folder that holds its project",
            file.display(),
            paths.root().display()
        );
    }
    let runtime = Runtime::new(paths, Limits::default());
    let script = runtime.isolates.isolate_for(&file).await?;
    let clients = &runtime.clients;
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
    runtime.isolates.shutdown(RUN_DRAIN_LIMIT).await;
    Ok(())
}

/// `./projects` when it holds the script, otherwise the folder above the script's folder (so
/// that the script's folder is a project of it).
fn default_script_workspace(file: &Path) -> anyhow::Result<WorkspacePaths> {
    if let Ok(projects) = WorkspacePaths::new(Path::new("projects")) {
        if file.starts_with(projects.root()) {
            return Ok(projects);
        }
    }
    let folder = file.parent().unwrap_or(file);
    let root = folder.parent().unwrap_or(folder);
    Ok(WorkspacePaths::new(root)?)
}

/// What the `engine` field of descriptors means here, logged once per distinct value.
fn engine_note(engine: &str) -> String {
    format!(
        "descriptor engine {engine:?} is accepted for compatibility: every handler runs on Switchboard's \
         JavaScript engine ({ENGINE_NAME})"
    )
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
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let paths = WorkspacePaths::new(&options.workspace)?;
    // A broker URL that cannot be used stops the start, before anything listens.
    let broker = match &options.broker {
        Some(broker) => {
            if broker.prefix.is_empty() || broker.prefix.chars().any(char::is_whitespace) {
                bail!(
                    "--broker-prefix {:?}: must be a non-empty name without spaces",
                    broker.prefix
                );
            }
            Some(Arc::new(RedisBroker::new(&broker.url)?))
        }
        None => None,
    };
    let tls = match &options.tls {
        Some((cert, key)) => Some(server::load_server_tls(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    // Watching begins before the first scan, so that a file changed while the handlers start is
    // applied once they have (the watcher keeps what it saw until then).
    let watcher = match options.watch {
        true => Some(
            workspace::watch::watch(paths.root(), options.debounce)
                .context("cannot watch the workspace (--no-watch serves without watching)")?,
        ),
        false => None,
    };
    let (runtime, reloader) = start(paths, options.limits, options.loading).await;
    let node_name = options
        .node_name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", host_name(), address.port()));
    runtime
        .connections
        .set_identity(node_name, address.to_string());
    let cluster = match (broker, &options.broker) {
        (Some(broker), Some(broker_options)) => {
            let shown = broker.describe().to_string();
            let cluster = Cluster::join(
                broker,
                &broker_options.prefix,
                &runtime.connections,
                runtime.stats.clone(),
            )
            .await;
            Some((cluster, shown, broker_options.prefix.clone()))
        }
        _ => None,
    };
    if let Loading::Lazy {
        unload_idle: Some(after),
    } = options.loading
    {
        tokio::spawn(unload_idle_handlers(runtime.clone(), after));
    }
    if let Some(mut watcher) = watcher {
        tokio::spawn(async move {
            while let Some(paths) = watcher.next_change().await {
                reloader.apply(&paths).await;
            }
        });
    }
    announce(&runtime, address, options.watch, tls.is_some());
    if let Some((cluster, shown, prefix)) = &cluster {
        println!(
            "node {} of {prefix:?} (--broker-prefix) on broker {shown}",
            cluster.node()
        );
    }
    let console =
        ConsoleAccess::for_listener(address, options.console_token.clone(), !options.console);
    match console.enabled {
        true => println!(
            "console: {}://{address}/{}",
            if tls.is_some() { "https" } else { "http" },
            if console.token.is_some() {
                " (open it with ?token=TOKEN once)"
            } else {
                ""
            }
        ),
        false => println!("{}", console.why_off),
    }
    let served = server::run(
        listener,
        tls,
        AppState::new(runtime).with_console(console),
        server::shutdown_signal(),
    )
    .await
    .context("the server failed");
    if let Some((cluster, _, _)) = cluster {
        cluster.leave(BYE_LIMIT).await;
    }
    served
}

/// The machine's host name, for the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// Scans the workspace and starts the handlers that load at start, recording load errors.
async fn start(
    paths: WorkspacePaths,
    limits: Limits,
    loading: Loading,
) -> (Arc<Runtime>, Arc<Reloader>) {
    let runtime = Runtime::with_loading(paths, limits, loading);
    let scan = workspace::scan(&runtime.workspace);
    log_scan(&scan);
    runtime.endpoints.apply(scan);
    let reloader = Reloader::new(runtime.clone());
    reloader.start_all().await;
    (runtime, reloader)
}

/// Prints one line per endpoint served, then the URL to open.
fn announce(runtime: &Runtime, address: SocketAddr, watching: bool, tls: bool) {
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let root = runtime.workspace.root().display();
    let snapshot = runtime.endpoints.snapshot();
    for endpoint in snapshot.endpoints.values() {
        let mut status = match runtime.endpoints.handler_error(&endpoint.handler_file) {
            Some(_) => " (handler failed to load, see the log)",
            None if !runtime.loads_at_start(endpoint) => " (loads on first use)",
            None => "",
        }
        .to_string();
        match endpoint.options.instances {
            Some(Instances::Fixed(count)) => status.push_str(&format!(" ({count} instances)")),
            Some(auto @ Instances::Auto) => {
                status.push_str(&format!(" ({} instances, one per core)", auto.count()))
            }
            None => {}
        }
        let declared = if endpoint.declared_in.ends_with(".websocket") {
            "descriptor"
        } else {
            "@Websocket in"
        };
        println!(
            "endpoint {:<20} {ws}://{address}/websockets/v4/service/{}  {declared} {}  handler {}{status}",
            endpoint.name, endpoint.name, endpoint.declared_in, endpoint.handler
        );
    }
    if snapshot.endpoints.is_empty() {
        println!(
            "no endpoints yet: add a *.websocket descriptor, or a *Websocket.ts module with a \
             @Websocket class, to a project of {root}"
        );
    }
    if let Loading::Lazy {
        unload_idle: Some(after),
    } = runtime.loading
    {
        println!(
            "handlers load on first use and unload after {} s unused (--unload-idle)",
            after.as_secs_f64()
        );
    }
    if watching {
        println!("watching {root} for changes (--no-watch turns it off)");
    }
    println!("Switchboard is listening: open {http}://{address}/");
}

/// How long `check` waits for the handlers it loaded to stop.
const CHECK_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// `switchboard check`: every problem of the workspace as `file: problem`. Handlers are loaded as
/// `serve` loads them (top level included, with the same limits), so what passes here starts
/// there. Returns how many problems there are.
pub async fn check(workspace_path: &Path, limits: Limits) -> anyhow::Result<usize> {
    let paths = WorkspacePaths::new(workspace_path)?;
    let scan = workspace::scan(&paths);
    let mut problems = 0;
    for problem in &scan.problems {
        println!("{problem}");
        problems += 1;
    }
    for warning in &scan.warnings {
        println!("{}: warning: {}", warning.file, warning.message);
    }
    let handlers: BTreeSet<&PathBuf> = scan.endpoints.values().map(|e| &e.handler_file).collect();
    let runtime = Runtime::new(paths, limits);
    for handler_file in handlers {
        if let Err(error) = runtime.isolates.isolate_for(handler_file).await {
            println!("{error}");
            problems += 1;
        }
    }
    runtime.clients.close_all(1001, "switchboard check is done");
    runtime.isolates.shutdown(CHECK_DRAIN_LIMIT).await;
    println!(
        "{} endpoint(s), {problems} problem(s) in {}",
        scan.endpoints.len(),
        workspace_path.display()
    );
    Ok(problems)
}
