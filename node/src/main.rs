//! The `edgemirror` binary: parse flags, load the config, start the node, print the ready line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgemirror_node::config::{Config, DEFAULT_CONFIG};

mod backfill_cli;

/// An edge/CDN node with mirror back-to-origin.
///
/// With no arguments, edgemirror serves its embedded default config: data plane on
/// 127.0.0.1:8080, admin on 127.0.0.1:8081, store in ./edgemirror-data, one bucket
/// "example-bucket". With --config FILE it reads that TOML file instead.
#[derive(Parser, Debug)]
#[command(name = "edgemirror", version)]
struct Args {
    /// TOML config file (see --print-default-config for every key and its default).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a backfill job (import keys nobody asked for) on a running node, and follow it.
    Backfill(backfill_cli::BackfillArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Backfill(backfill)) = args.command {
        return backfill_cli::run(backfill);
    }
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::from_toml(DEFAULT_CONFIG),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgemirror: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    let node = match edgemirror_node::start(config, args.config.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("edgemirror: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // One machine-readable line on stdout once every listener is bound (tests and scripts wait
    // for it).
    match node.tls_addr {
        Some(tls) => println!("edgemirror ready data={} admin={} tls={tls}", node.data_addr, node.admin_addr),
        None => println!("edgemirror ready data={} admin={}", node.data_addr, node.admin_addr),
    }
    let _ = std::io::stdout().flush();
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgemirror: cannot install signal handlers: {e}");
            node.wait();
            return ExitCode::SUCCESS;
        }
    };
    for signal in signals.forever() {
        match signal {
            // logrotate's convention: the file was moved away, open a new one by its path.
            SIGUSR1 => node.reopen_access_log(),
            // Read the config file again; a bad one is refused and the running config stays.
            SIGHUP => node.reload(),
            _ => {
                tracing::info!(signal, "shutting down: flushing the store and the access log");
                node.flush();
                break;
            }
        }
    }
    if edgemirror_node::server::STOPPED_BY_PANIC.load(std::sync::atomic::Ordering::SeqCst) {
        // EX_SOFTWARE: a bug stopped the node (the log says where), for its supervisor to restart it.
        return ExitCode::from(70);
    }
    ExitCode::SUCCESS
}
