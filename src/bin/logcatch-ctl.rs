//! `logcatch-ctl`: inspect and steer a logcatch daemon.
//!
//! It talks to the daemon's admin endpoint (found from the config). When no
//! daemon is running it opens the store directly, and says that it did.
//! Exit codes: 0 ok, 1 daemon or store error, 2 usage error.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logcatch::config::{AdminListen, Config};
use logcatch::control::admin::{QueueReport, StatusReport};
use logcatch::control::offsets::OffsetRow;
use logcatch::control::reset::ResetTo;

#[derive(Parser)]
#[command(
    version,
    about = "Inspect and steer logcatch: per-file offsets, the spool, reloads"
)]
struct Args {
    /// The daemon's YAML config file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per source (and per file of a glob source): path, device:inode,
    /// committed offset, size, lag, lines, state.
    Offsets {
        /// Only this source (a glob source: all its files).
        name: Option<String>,
    },
    /// The spool: segments, bytes waiting, oldest unacknowledged line, delivery counts.
    Queue,
    /// Version, uptime, config and last reload, broker connection.
    Status,
    /// Move a source to the beginning, the end, or a byte offset of its file.
    Reset {
        name: String,
        /// One file of glob source NAME.
        #[arg(long)]
        file: Option<PathBuf>,
        /// beginning | end | a byte offset
        #[arg(long)]
        to: ResetTo,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Drop a source's offset record (it then starts over as a new file).
    Forget {
        name: String,
        /// One file of glob source NAME.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        yes: bool,
    },
    /// Reload the config now (like SIGHUP) and print what changed.
    Reload,
}

/// A failure: message and exit code.
struct Failure(String, u8);

fn fail(msg: impl std::fmt::Display) -> Failure {
    Failure(msg.to_string(), 1)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("logcatch-ctl: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let config_path = args
        .config
        .ok_or_else(|| Failure("--config PATH is required".into(), 2))?;
    let json = args.json;
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            // A running daemon keeps its last good config: still ask it.
            let Some(endpoint) = logcatch::config::admin_endpoint_lenient(&config_path) else {
                return Err(fail(e));
            };
            eprintln!("logcatch-ctl: warning: {e}");
            return run_without_config(&args.command, &endpoint, json)
                .unwrap_or_else(|| Err(fail(e)));
        }
    };
    let endpoint = config.admin.listen.clone();
    match args.command {
        Command::Offsets { name } => {
            let rows = live_or_offline(&endpoint, "/offsets", &config, |c| {
                logcatch::control::offsets::read_offline(c)
            })?;
            let rows = only_source(rows, name.as_deref());
            show(&rows[..], json, print_offsets)
        }
        Command::Queue => {
            let q = live_or_offline(&endpoint, "/queue", &config, |c| {
                logcatch::control::admin::queue_offline(c)
            })?;
            show(&q, json, print_queue)
        }
        Command::Status => match get(&endpoint, "GET", "/status")? {
            Some(body) => show(&parse::<StatusReport>(&body)?, json, print_status),
            None => Err(fail(format!(
                "no daemon is running (nothing answers at {endpoint}); config {}",
                config.file.display()
            ))),
        },
        Command::Reload => reload(&endpoint, json),
        Command::Reset {
            name,
            file,
            to,
            yes,
        } => reset(&config, &key_of(&config, &name, file.as_deref())?, to, yes),
        Command::Forget { name, file, yes } => {
            forget(&config, &key_of(&config, &name, file.as_deref())?, yes)
        }
    }
}

fn reload(endpoint: &AdminListen, json: bool) -> Result<(), Failure> {
    let Some(body) = get(endpoint, "POST", "/reload")? else {
        return Err(fail(format!(
            "no daemon is running (nothing answers at {endpoint})"
        )));
    };
    let v: serde_json::Value = parse(&body)?;
    if json {
        return print_json(&v);
    }
    let d: logcatch::control::reload::SourceDiff =
        serde_json::from_value(v["result"].clone()).map_err(fail)?;
    println!("reloaded: {}", d.summary());
    Ok(())
}

/// `reset`: live through the daemon, or on the stopped store.
fn reset(config: &Config, name: &str, to: ResetTo, yes: bool) -> Result<(), Failure> {
    confirm(&format!("Reset source `{name}` to {}?", describe(to)), yes)?;
    let to_arg = match to {
        ResetTo::Beginning => "beginning".to_string(),
        ResetTo::End => "end".to_string(),
        ResetTo::Offset(n) => n.to_string(),
    };
    let path = format!("/reset?name={}&to={to_arg}", encode(name));
    match get(&config.admin.listen, "POST", &path)? {
        Some(_) => println!("source `{name}` reset to {} (live)", describe(to)),
        None => {
            offline_note(config);
            logcatch::daemon::offline_set_record(config, name, Some(to)).map_err(fail)?;
            println!("source `{name}` reset to {} in the store", describe(to));
        }
    }
    Ok(())
}

/// `forget`: live through the daemon, or on the stopped store.
fn forget(config: &Config, name: &str, yes: bool) -> Result<(), Failure> {
    confirm(
        &format!("Forget the offset record of source `{name}`?"),
        yes,
    )?;
    let path = format!("/forget?name={}", encode(name));
    match get(&config.admin.listen, "POST", &path)? {
        Some(_) => println!("source `{name}` forgotten (live)"),
        None => {
            offline_note(config);
            logcatch::daemon::offline_set_record(config, name, None).map_err(fail)?;
            println!("source `{name}` forgotten in the store");
        }
    }
    Ok(())
}

/// Commands that a running daemon can answer when the config file itself
/// does not validate. `None`: the command needs the config, or no daemon
/// answers.
fn run_without_config(
    command: &Command,
    endpoint: &AdminListen,
    json: bool,
) -> Option<Result<(), Failure>> {
    let path = match command {
        Command::Offsets { .. } => "/offsets",
        Command::Queue => "/queue",
        Command::Status => "/status",
        _ => return None,
    };
    let body = match get(endpoint, "GET", path) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(match command {
        Command::Offsets { name } => parse::<Vec<OffsetRow>>(&body)
            .map(|r| only_source(r, name.as_deref()))
            .and_then(|r| show(&r[..], json, print_offsets)),
        Command::Queue => parse::<QueueReport>(&body).and_then(|q| show(&q, json, print_queue)),
        _ => parse::<StatusReport>(&body).and_then(|st| show(&st, json, print_status)),
    })
}

/// The daemon's answer at `path`, or with no daemon running, `offline`
/// on the stopped store (and a note saying so).
fn live_or_offline<T: serde::de::DeserializeOwned, E: std::fmt::Display>(
    endpoint: &AdminListen,
    path: &str,
    config: &Config,
    offline: impl FnOnce(&Config) -> Result<T, E>,
) -> Result<T, Failure> {
    match get(endpoint, "GET", path)? {
        Some(body) => parse(&body),
        None => {
            offline_note(config);
            offline(config).map_err(fail)
        }
    }
}

/// Prints a report as JSON or as its table.
fn show<T: serde::Serialize + ?Sized>(v: &T, json: bool, table: fn(&T)) -> Result<(), Failure> {
    if json {
        print_json(v)
    } else {
        table(v);
        Ok(())
    }
}

/// The rows of source `name` only (all of them without a name).
fn only_source(rows: Vec<OffsetRow>, name: Option<&str>) -> Vec<OffsetRow> {
    match name {
        None => rows,
        Some(n) => rows
            .into_iter()
            .filter(|r| r.source == n || r.name == n)
            .collect(),
    }
}

/// The key `reset` and `forget` act on: source `name`, or with `--file`
/// one file of glob source `name` (its path made absolute).
fn key_of(config: &Config, name: &str, file: Option<&std::path::Path>) -> Result<String, Failure> {
    let glob = config.sources.get(name).is_some_and(|s| s.glob.is_some());
    match file {
        None if glob => Err(Failure(
            format!("`{name}` is a glob source: name one of its files with --file PATH (`logcatch-ctl offsets {name}` lists them)"),
            2,
        )),
        None => Ok(name.to_string()),
        Some(f) => {
            let abs = std::path::absolute(f).map_err(|e| fail(format!("{}: {e}", f.display())))?;
            Ok(logcatch::config::file_key(name, &abs))
        }
    }
}

fn describe(to: ResetTo) -> String {
    match to {
        ResetTo::Beginning => "the beginning".into(),
        ResetTo::End => "the end".into(),
        ResetTo::Offset(n) => format!("byte offset {n}"),
    }
}

fn offline_note(config: &Config) {
    eprintln!(
        "(no daemon is running: read the store at {} directly)",
        logcatch::daemon::store_dir(config).display()
    );
}

fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure(
            format!("{question} Refusing without --yes (standard input is not a terminal)"),
            2,
        ));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(fail)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure("not confirmed; nothing changed".into(), 1))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request to the admin endpoint. `None`: no daemon answers.
fn get(endpoint: &AdminListen, method: &str, path: &str) -> Result<Option<Vec<u8>>, Failure> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: logcatch\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let mut raw = Vec::new();
    let absent = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        )
    };
    let io = |e: std::io::Error| fail(format!("admin endpoint {endpoint}: {e}"));
    match endpoint {
        AdminListen::Unix(p) => {
            let mut s = match std::os::unix::net::UnixStream::connect(p) {
                Ok(s) => s,
                Err(e) if absent(&e) => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
        AdminListen::Tcp(a) => {
            let mut s = match std::net::TcpStream::connect(a) {
                Ok(s) => s,
                Err(e) if absent(&e) => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("malformed reply from the admin endpoint"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(fail("unexpected chunked reply from the admin endpoint"));
    }
    if status != 200 {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(fail(msg));
    }
    Ok(Some(body))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| fail(format!("bad reply from the daemon: {e}")))
}

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(fail)?;
    println!("{s}");
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(t) => {
            let secs = logcatch::runtime::now_ms().saturating_sub(t) / 1000;
            format!("{secs}s ago")
        }
    }
}

fn print_offsets(rows: &[OffsetRow]) {
    println!(
        "{:<12} {:<36} {:>16} {:>12} {:>12} {:>10} {:>10} {:>12} {:<12} STATE",
        "NAME", "PATH", "DEV:INODE", "OFFSET", "SIZE", "LAG", "LINES", "BYTES", "LAST READ"
    );
    for r in rows {
        let id = match (r.device, r.inode) {
            (Some(d), Some(i)) => format!("{d}:{i}"),
            _ => "-".into(),
        };
        println!(
            "{:<12} {:<36} {:>16} {:>12} {:>12} {:>10} {:>10} {:>12} {:<12} {}",
            // A glob source's files are listed under its name.
            if r.source.is_empty() {
                &r.name
            } else {
                &r.source
            },
            r.path,
            id,
            opt(r.offset),
            opt(r.size),
            opt(r.lag_bytes),
            opt(r.lines),
            opt(r.bytes),
            age(r.last_read_ms.or(r.updated_ms)),
            r.state
        );
        for d in &r.draining {
            println!(
                "{:<12} {:<36} {:>16} {:>12} {:>12} {:>10} {:>10} {:>12} {:<12} draining_rotated",
                "",
                format!("└ {}", d.path.as_deref().unwrap_or("(gone)")),
                format!("{}:{}", d.device, d.inode),
                d.offset,
                opt(d.size),
                opt(d.lag_bytes),
                "",
                "",
                ""
            );
        }
        if let Some(e) = &r.last_error {
            println!("{:<12} error: {e}", "");
        }
    }
}

fn print_queue(q: &QueueReport) {
    let line = |k: &str, v: String| println!("{k:<28} {v}");
    line("spool", q.spool_dir.clone());
    line("segments", q.segments.to_string());
    line("bytes on disk", q.bytes.to_string());
    line("bytes waiting for Kafka", q.waiting_bytes.to_string());
    line(
        "cursor (segment:pos+lines)",
        q.cursor
            .map(|c| format!("{}:{}+{}", c.segment, c.position, c.lines_done))
            .unwrap_or_else(|| "-".into()),
    );
    line(
        "paused by backpressure",
        q.paused_by_backpressure.to_string(),
    );
    line(
        "oldest unacked line age",
        q.oldest_unacked_age_ms
            .map(|a| format!("{a} ms"))
            .unwrap_or_else(|| "-".into()),
    );
    line(
        "sent / delivered",
        format!("{} / {}", opt(q.sent), opt(q.delivered)),
    );
    line("producer errors", opt(q.producer_errors));
    line("producer rebuilds", opt(q.producer_rebuilds));
    line("dead-lettered", opt(q.dead_lettered));
    line(
        "damaged frames (bytes)",
        format!("{} ({})", q.damaged_frames, q.damaged_bytes),
    );
    line("missing segments", q.missing_segments.to_string());
}

fn print_status(s: &StatusReport) {
    let line = |k: &str, v: String| println!("{k:<22} {v}");
    line("version", s.version.clone());
    line("pid", s.pid.to_string());
    line("uptime", format!("{}s", s.uptime_secs));
    line("config", s.config_file.clone());
    line("config loaded", age(Some(s.config_loaded_ms)));
    line(
        "reloads (failed)",
        format!("{} ({})", s.reloads, s.reload_failures),
    );
    line(
        "last reload error",
        s.last_reload_error.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "sources (running)",
        format!("{} ({})", s.sources, s.running_tailers),
    );
    line("broker", s.broker.clone());
    line("kafka client", s.kafka_client.clone());
    line(
        "last kafka error",
        s.last_kafka_error.clone().unwrap_or_else(|| "-".into()),
    );
}
