//! `logcatch`: the daemon. Parses flags, sets up logging and signals, and
//! hands over to `logcatch::daemon::run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use logcatch::config::Config;
use logcatch::control::reload::Trigger;

#[derive(Parser)]
#[command(
    version,
    about = "Tails log files into a durable spool and delivers every line to Kafka"
)]
struct Args {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log level or filter (default: $RUST_LOG, else info).
    #[arg(long)]
    log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    logcatch::logging::init(args.log_level.as_deref(), args.log_json);
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Our error types already name their cause; add a cause from
            // the chain only when it says something new.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            tracing::error!("{msg}");
            eprintln!("logcatch: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if args.check {
        println!(
            "{}: ok ({} sources, data_dir {})",
            args.config.display(),
            config.sources.len(),
            config.data_dir.display()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let shutdown = logcatch::daemon::Shutdown::new();
        let signals = shutdown.clone();
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let hup_tx = reload_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                    _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP received: reloading the config");
                        let _ = hup_tx.send(Trigger::Forced).await;
                    }
                }
            }
            signals.request();
        });
        logcatch::daemon::run(config, shutdown, reload_tx, reload_rx).await?;
        Ok(())
    })
}
