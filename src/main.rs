use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::app::{self, ServeOptions};

/// Switchboard: WebSocket endpoints from *.websocket descriptors, handled by JavaScript modules.
#[derive(Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
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
        #[arg(default_value = "./projects")]
        workspace: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            workspace,
            listen,
            no_watch,
            watch_debounce_ms,
        } => block_on(app::serve(ServeOptions {
            workspace,
            listen,
            watch: !no_watch,
            debounce: std::time::Duration::from_millis(watch_debounce_ms.max(1)),
        })),
        Command::Run { file, workspace } => block_on(app::run_script(&file, workspace.as_deref())),
        Command::Check { workspace } => match app::check(&workspace) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("switchboard: {error}");
                ExitCode::from(2)
            }
        },
    }
}

/// Runs a command on a multi-threaded runtime (the network side) and reports its error as one line.
fn block_on(command: impl std::future::Future<Output = Result<(), app::AppError>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error}");
            ExitCode::FAILURE
        }
    }
}
