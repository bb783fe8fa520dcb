//! The `switchboard` command line: parses arguments, sets up logging, runs a command of
//! [`switchboard::app`] and turns its outcome into an exit code and one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard::app::{self, BrokerOptions, ServeOptions};
use switchboard::endpoints::Loading;
use switchboard::limits::{CompressionMode, Limits, QueueBounds};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Switchboard: WebSocket endpoints from *.websocket descriptors, handled by JavaScript modules.
#[derive(Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the workspace's endpoints.
    Serve {
        /// The workspace: a folder of project folders.
        #[arg(default_value = "./projects")]
        workspace: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Do not watch the workspace for changes.
        #[arg(long)]
        no_watch: bool,
        /// Milliseconds files must stay quiet before a change is applied.
        #[arg(long, default_value_t = 150)]
        watch_debounce_ms: u64,
        /// When handlers load: eager (all at start: errors and onStart then) or lazy (each on
        /// its first connection, those with a service at start; for workspaces of many
        /// handlers: one never used costs nothing; `check` finds load errors beforehand).
        #[arg(long, value_enum, default_value_t = LoadArg::Eager)]
        load: LoadArg,
        /// With --load lazy: unload a handler nothing has used for this many seconds (no event,
        /// no open connection, no outbound client); its next use loads it afresh, module state
        /// included. Memory then follows the handlers in use.
        #[arg(long, value_name = "SECONDS")]
        unload_idle: Option<f64>,
        /// Limits and timeouts.
        #[command(flatten)]
        limits: LimitArgs,
        /// Serve https/wss with this PEM certificate chain (needs --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Several nodes, one application.
        #[command(flatten)]
        broker: BrokerArgs,
        /// The web console at / needs this token (open /?token=TOKEN once); without a token the
        /// console is on only when listening on loopback.
        #[arg(long, env = "SWITCHBOARD_CONSOLE_TOKEN", hide_env_values = true)]
        console_token: Option<String>,
        /// Do not serve the web console.
        #[arg(long)]
        no_console: bool,
    },
    /// Run one module (a script that may open outbound clients); exits when it has no timers,
    /// pending work or open clients left.
    Run {
        /// The module to run.
        file: PathBuf,
        /// The workspace handler paths are resolved in (default: ./projects if it holds FILE,
        /// otherwise the folder above FILE's folder).
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
    /// Validate every descriptor and handler; exits non-zero if any has a problem.
    Check {
        /// The workspace: a folder of project folders.
        #[arg(default_value = "./projects")]
        workspace: PathBuf,
        /// The limits handlers load with, as for `serve`.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write the handler API's TypeScript declarations (switchboard.d.ts) into a project folder,
    /// and a tsconfig.json if it has none, for editors and `tsc --noEmit`.
    Types {
        /// The project folder.
        project: PathBuf,
    },
    /// Create a working project from a template: an endpoint, its handler with every event, and
    /// a page that talks to it. A running `serve` picks it up live; nothing is overwritten.
    New {
        /// The project's folder name, in the workspace.
        project: String,
        /// The endpoint's name (default: the project's).
        #[arg(long)]
        endpoint: Option<String>,
        /// A TypeScript endpoint declared with @Websocket, instead of a descriptor and a
        /// JavaScript handler.
        #[arg(long)]
        ts: bool,
        /// The workspace.
        #[arg(long, default_value = "./projects")]
        workspace: PathBuf,
    },
}

/// `serve --load`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LoadArg {
    /// Every handler at start.
    Eager,
    /// Each handler on first use.
    Lazy,
}

/// Several nodes serving one application through a broker (docs/scale-out.md).
#[derive(Args)]
struct BrokerArgs {
    /// Link this node with the others through Redis: redis://[user:password@]host:port/db, or
    /// rediss:// for TLS. Publish, broadcast, send and disconnect then reach every node.
    #[arg(long, env = "SWITCHBOARD_BROKER")]
    broker: Option<String>,
    /// Prefix of every channel and key in the broker, so that applications can share one Redis.
    #[arg(long, env = "SWITCHBOARD_BROKER_PREFIX", default_value = "switchboard")]
    broker_prefix: String,
    /// This node's name in presence and logs (default: host name and listening port).
    #[arg(long, env = "SWITCHBOARD_NODE_NAME")]
    node_name: Option<String>,
}

/// Limits; the defaults suit production. Descriptors can set some per endpoint.
#[derive(Args)]
struct LimitArgs {
    /// Largest message accepted from a peer, in bytes (per endpoint: maxMessageSize); larger
    /// ones close the connection with 1009.
    #[arg(long, default_value_t = 1 << 20)]
    max_message_size: usize,
    /// Most connections open at once (per endpoint: maxConnections); more get HTTP 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Messages that may wait for a slow peer before it is closed with 1008.
    #[arg(long, default_value_t = 1_000)]
    send_queue_messages: usize,
    /// Bytes that may wait for a slow peer before it is closed with 1008.
    #[arg(long, default_value_t = 16 << 20)]
    send_queue_bytes: usize,
    /// Milliseconds one handler event may run before it is terminated.
    #[arg(long, default_value_t = 5_000)]
    event_timeout_ms: u64,
    /// Heap of each handler isolate, in MiB.
    #[arg(long, default_value_t = 128)]
    isolate_heap_mib: usize,
    /// Milliseconds between pings to each peer (0: no pings).
    #[arg(long, default_value_t = 30_000)]
    ping_interval_ms: u64,
    /// Milliseconds a peer may stay silent after a ping before it is closed with 1001.
    #[arg(long, default_value_t = 30_000)]
    pong_timeout_ms: u64,
    /// Milliseconds a graceful shutdown may take at most.
    #[arg(long, default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Milliseconds an HTTP client has to send a request's headers, counted from when the server
    /// starts waiting: a silent new connection, or one idle between requests before any upgrade,
    /// is closed then.
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// An origin allowed to connect to endpoints without allowedOrigins (repeatable; default:
    /// any origin).
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// permessage-deflate for endpoints whose descriptor does not choose (compression): off;
    /// shared (no context kept between messages, one compressor per thread, nothing per idle
    /// connection); or dedicated (a window per connection, better for chatty peers).
    #[arg(long, default_value = "off", value_parser = ["off", "shared", "dedicated"])]
    compression: String,
    /// The window of dedicated compression, in bits (8-15; per endpoint:
    /// compressionWindowBits).
    #[arg(long, value_parser = clap::value_parser!(u8).range(8..=15))]
    compression_window_bits: Option<u8>,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 256)]
    compression_min_bytes: usize,
    /// zlib's compression level, 1 (fastest) to 9 (smallest messages).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9))]
    compression_level: u8,
    /// Most memory, in MiB, that dedicated compression windows take together; past it, new
    /// connections get shared compression.
    #[arg(long, default_value_t = 256)]
    compression_memory_mib: usize,
}

impl From<LimitArgs> for Limits {
    fn from(args: LimitArgs) -> Self {
        Limits {
            max_message_size: args.max_message_size.max(1),
            max_connections: args.max_connections,
            send_queue: QueueBounds {
                messages: args.send_queue_messages.max(1),
                bytes: args.send_queue_bytes.max(1),
            },
            event_time: Duration::from_millis(args.event_timeout_ms.max(1)),
            isolate_heap: args.isolate_heap_mib.max(8) << 20,
            ping_interval: (args.ping_interval_ms > 0)
                .then(|| Duration::from_millis(args.ping_interval_ms)),
            pong_timeout: Duration::from_millis(args.pong_timeout_ms.max(1)),
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
            header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
            allowed_origins: args
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            compression: CompressionMode::parse(&args.compression, args.compression_window_bits)
                .unwrap_or_else(|error| {
                    clap::Error::raw(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--compression-window-bits: {error}\n"),
                    )
                    .exit()
                }),
            compression_min_bytes: args.compression_min_bytes,
            compression_level: args.compression_level,
            compression_memory: args.compression_memory_mib << 20,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` reports its findings on stdout; its log says only what went wrong besides.
    let default_filter = match cli.command {
        Command::Check { .. } => "warn",
        _ => "info",
    };
    // The TypeScript transpiler (swc) logs its own workings at debug level; a user's
    // RUST_LOG=debug is about Switchboard and handlers, so swc says only warnings and errors.
    let not_transpiler_detail = tracing_subscriber::filter::filter_fn(|event| {
        !event.target().starts_with("swc") || *event.level() <= tracing::Level::WARN
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with(not_transpiler_detail)
        .init();
    match cli.command {
        Command::Serve {
            workspace,
            listen,
            no_watch,
            watch_debounce_ms,
            load,
            unload_idle,
            limits,
            tls_cert,
            tls_key,
            broker,
            console_token,
            no_console,
        } => {
            let loading = match (load, unload_idle) {
                (LoadArg::Eager, None) => Loading::Eager,
                (LoadArg::Lazy, None) => Loading::Lazy { unload_idle: None },
                (LoadArg::Lazy, Some(seconds)) if seconds.is_finite() && seconds > 0.0 => {
                    Loading::Lazy {
                        unload_idle: Some(Duration::from_secs_f64(seconds)),
                    }
                }
                (LoadArg::Lazy, Some(seconds)) => {
                    eprintln!("switchboard: --unload-idle must be a positive number of seconds, got {seconds}");
                    return ExitCode::FAILURE;
                }
                (LoadArg::Eager, Some(_)) => {
                    eprintln!("switchboard: --unload-idle needs --load lazy (an unloaded handler loads again on its next use)");
                    return ExitCode::FAILURE;
                }
            };
            block_on(app::serve(ServeOptions {
                workspace,
                listen,
                watch: !no_watch,
                debounce: Duration::from_millis(watch_debounce_ms.max(1)),
                loading,
                limits: limits.into(),
                tls: tls_cert.zip(tls_key),
                broker: broker.broker.map(|url| BrokerOptions {
                    url,
                    prefix: broker.broker_prefix,
                }),
                node_name: broker.node_name,
                console_token,
                console: !no_console,
            }))
        }
        Command::Types { project } => match app::write_types(&project) {
            Ok(written) => {
                for file in written {
                    println!("wrote {}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("switchboard: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::New {
            project,
            endpoint,
            ts,
            workspace,
        } => {
            let options = app::NewProject {
                project: project.clone(),
                endpoint,
                typescript: ts,
            };
            match app::new_project(&workspace, &options) {
                Ok(written) => {
                    for file in written {
                        println!("wrote {}", file.display());
                    }
                    println!(
                        "a running `switchboard serve {}` serves it now; its page: /services/web/{project}/",
                        workspace.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("switchboard: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { file, workspace } => block_on(app::run_script(&file, workspace.as_deref())),
        Command::Check { workspace, limits } => {
            let problems = std::cell::Cell::new(0);
            let checked = block_on(async {
                problems.set(app::check(&workspace, limits.into()).await?);
                Ok(())
            });
            match (checked, problems.get()) {
                (ExitCode::SUCCESS, 0) => ExitCode::SUCCESS,
                (ExitCode::SUCCESS, _) => ExitCode::FAILURE,
                _ => ExitCode::from(2),
            }
        }
    }
}

/// Runs a command on a multi-threaded runtime (the network side) and reports its error as one line.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(command);
    // The command has finished within its own time bounds (shutdown's included); a handler thread
    // that is still busy (a handler spinning in its top level, say) must not keep the process
    // alive, so the runtime is not waited for beyond this.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
