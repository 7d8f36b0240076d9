//! `logcatch-ctl`: inspect a logcatch daemon's progress.
//!
//! With the daemon stopped it opens the store directly (and says so).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logcatch::config::Config;
use logcatch::offsets::{self, OffsetRow};

#[derive(Parser)]
#[command(version, about = "Inspect logcatch's per-file progress")]
struct Args {
    /// The daemon's YAML config file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-source committed offsets, file identity and lag.
    Offsets {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(config_path) = args.config else {
        eprintln!("logcatch-ctl: --config PATH is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logcatch-ctl: {e}");
            return ExitCode::from(1);
        }
    };
    match args.command {
        Command::Offsets { json } => match offsets::read_offline(&config) {
            Ok(rows) => {
                eprintln!(
                    "(read from the store at {} directly: no daemon is running)",
                    logcatch::daemon::store_dir(&config).display()
                );
                print_offsets(&rows, json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("logcatch-ctl: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn print_offsets(rows: &[OffsetRow], json: bool) {
    if json {
        match serde_json::to_string_pretty(rows) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("logcatch-ctl: cannot encode JSON: {e}"),
        }
        return;
    }
    println!(
        "{:<16} {:<40} {:>14} {:>12} {:>12} {:>10} {:>10}",
        "NAME", "PATH", "DEV:INODE", "OFFSET", "SIZE", "LAG", "LINES"
    );
    for r in rows {
        let id = match (r.device, r.inode) {
            (Some(d), Some(i)) => format!("{d}:{i}"),
            _ => "-".into(),
        };
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<40} {:>14} {:>12} {:>12} {:>10} {:>10}",
            r.name,
            r.path,
            id,
            opt(r.offset),
            opt(r.size),
            opt(r.lag_bytes),
            opt(r.lines)
        );
    }
}
