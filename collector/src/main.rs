//! `flightrec-collector`: command-line entry point. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flightrec_collector::config::Config;

/// Central collector for flightrec snapshots: receives uploads from recorders, archives and
/// catalogues them, serves a browse API and web UI, and fans group triggers out.
#[derive(Parser)]
#[command(name = "flightrec-collector", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector in the foreground.
    ///
    /// Without --config it runs on the embedded defaults: loopback port 7480, archive and
    /// catalog in /var/lib/flightrec-collector, and an admin token generated on the first
    /// start into DATA_DIR/admin.token (mode 0600).
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (see collector/examples/collector.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Check the configuration strictly, print the effective settings (tokens and secrets
    /// redacted) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("flightrec-collector: error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Command::Serve(args) = cli.command;
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.storage.data_dir = d;
    }
    config.check()?;
    if args.check_config {
        // Tokens and the S3 secret stay out of terminals and logs.
        println!("{}", toml::to_string_pretty(&config.redacted())?);
        eprintln!("flightrec-collector: configuration is valid");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = config.listen_addr()?;
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr()?;
        let state = flightrec_collector::AppState::open(config.clone())?;
        eprintln!(
            "flightrec-collector: listening on {} (archive: {}; data in {})",
            config.public_url(bound),
            state.archive.description,
            config.storage.data_dir.display()
        );
        if let Some(path) = &state.admin_token_file {
            eprintln!(
                "flightrec-collector: no token is configured in [auth]: the admin token is in {} \
                 (readable by its owner only)",
                path.display()
            );
        }
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("signal handler");
            let mut int = signal(SignalKind::interrupt()).expect("signal handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        flightrec_collector::serve(state, listener, shutdown).await?;
        eprintln!("flightrec-collector: stopped");
        Ok(())
    })
}
