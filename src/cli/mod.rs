//! Command line: run a node, or talk to the node already running with the same config.
//!
//! `p2p-node --config FILE` starts the node, unless one already answers on that config's
//! `api.listen`: then it is a client, and commands come from stdin. That is what makes
//! `echo "task compute test_payload" | ./p2p-node --config /app/config.yaml` work inside a
//! pod whose node owns port 4001: the second process talks to the node, never fights it.

pub mod client;
pub mod commands;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use self::client::ApiClient;
use self::commands::Command;
use crate::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "p2p-node",
    version,
    about = "A peer-to-peer worker cluster node (bootstrap, relay or worker)",
    after_help = "COMMAND is one of: run, check-config, identity <file>, psk <file>, help, peers, status, capabilities, \
task <type> <payload...>, submit <type> <payload...>, task-status <id> [--timeline], cancel <id>, tasks, \
module add <file.wasm>, task wasm <module-id|file.wasm> <input|-> [--replicas N] [--quorum Q].\n\
Without COMMAND: starts the node, or, if a node with this config is already running, reads commands from stdin.\n\
Environment: P2P_<SECTION>__<KEY> overrides a config key (e.g. P2P_NODE__LISTEN_PORT=4001); RUST_LOG sets log levels."
)]
pub struct Args {
    /// YAML configuration file.
    #[arg(short, long, env = "P2P_CONFIG", default_value = "config.yaml")]
    pub config: PathBuf,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// What to do; see below.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// Entry point of the binary; returns the process exit code.
pub async fn main(args: Args) -> anyhow::Result<i32> {
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    if let ["identity", path] = words.as_slice() {
        let (key, created) = crate::identity::load_or_create(std::path::Path::new(path))?;
        say(key.public().to_peer_id());
        if created {
            eprintln!("created {path}");
        }
        return Ok(0);
    }
    if let ["psk", path] = words.as_slice() {
        let key = crate::identity::create_psk(std::path::Path::new(path))?;
        say(key.fingerprint());
        eprintln!("created {path}: give every node of the cluster this file as security.psk_file");
        return Ok(0);
    }
    let config = Config::load(&args.config, std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let api = ApiClient::new(config.api_client_addr());
    match words.as_slice() {
        ["check-config"] => {
            say(format!(
                "{}: ok (role {}, port {}, api {}, metrics {})",
                args.config.display(),
                config.node.role,
                config.node.listen_port,
                config.api.listen,
                config.metrics.listen
            ));
            Ok(0)
        }
        ["run"] => run_node(config, args.log_format).await,
        [] => {
            if api.node_running().await {
                client_session(&api).await
            } else {
                run_node(config, args.log_format).await
            }
        }
        _ => {
            let line = args.command.join(" ");
            let cmd = Command::parse(&line).map_err(|e| anyhow::anyhow!(e))?;
            let Some(cmd) = cmd else { return Ok(0) };
            match commands::execute(&api, &cmd).await {
                Ok(text) => {
                    say(text);
                    Ok(0)
                }
                Err(text) => {
                    eprintln!("{text}");
                    Ok(1)
                }
            }
        }
    }
}

/// Commands from stdin against a running node: a prompt on a terminal, or piped lines.
async fn client_session(api: &ApiClient) -> anyhow::Result<i32> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("connected to the node at {}; type `help`", api.addr());
    }
    let failures = command_loop(api, interactive).await?;
    Ok(i32::from(failures > 0))
}

/// Reads commands until EOF or `quit`; returns how many failed.
async fn command_loop(api: &ApiClient, interactive: bool) -> anyhow::Result<usize> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut failures = 0;
    loop {
        if interactive {
            out.write_all(b"p2p> ").await?;
            out.flush().await?;
        }
        let Some(line) = lines.next_line().await? else { break };
        let cmd = match Command::parse(&line) {
            Ok(Some(Command::Quit)) => break,
            Ok(Some(cmd)) => cmd,
            Ok(None) => continue,
            Err(e) => {
                failures += 1;
                eprintln!("{e}");
                continue;
            }
        };
        match commands::execute(api, &cmd).await {
            Ok(text) => {
                let written = async {
                    out.write_all(text.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    out.flush().await
                };
                match written.await {
                    // The reader went away (`... | head -1`): stop quietly, like Unix tools.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    written => written?,
                }
            }
            Err(text) => {
                failures += 1;
                eprintln!("{text}");
            }
        }
    }
    Ok(failures)
}

/// Starts the node and runs it until SIGINT/SIGTERM (or `quit` at its prompt).
async fn run_node(config: Config, log_format: Option<LogFormatArg>) -> anyhow::Result<i32> {
    let format = match log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    // The node's identity names its spans; loading it here also creates it on a first start.
    let (key, _) = crate::identity::load_or_create(&config.node.identity_file).context("node failed to start")?;
    let identity = crate::telemetry::NodeIdentity {
        peer_id: key.public().to_peer_id().to_string(),
        role: config.node.role.to_string(),
    };
    let telemetry = crate::telemetry::install(format, &config.telemetry, &identity)?;
    let node = crate::node::Node::start_with_telemetry(config.clone(), telemetry.spans_dropped())
        .await
        .context("node failed to start")?;
    let api_addr = node.api_addr();
    tracing::info!(peer_id = %node.peer_id(), api = %api_addr, metrics = %node.metrics_addr(), "node started");

    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
    // Commands typed at (or piped to) the node's own process go through its API like any
    // other client, so every way of issuing a command behaves the same.
    tokio::spawn(async move {
        let interactive = std::io::stdin().is_terminal();
        let api = ApiClient::new(api_addr);
        if let Ok(failures) = command_loop(&api, interactive).await {
            if interactive {
                let _ = quit_tx.send(());
            } else if failures > 0 {
                tracing::warn!(failures, "some piped commands failed");
            }
        }
    });
    let shutdown = async move {
        let quit = async {
            if quit_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown signal received"),
            _ = quit => tracing::info!("quit at the prompt"),
        }
    };
    // On a runtime worker, not this thread (the runtime's `block_on`): every hand-off to the
    // core (an API request, a network event) would otherwise wake a thread of its own.
    let ended = tokio::spawn(node.run(shutdown)).await;
    // The last spans leave (bounded), off the runtime: the exporter's client blocks.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    ended.context("the node's task panicked")?;
    Ok(0)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes a line to stdout. A closed pipe (`p2p-node peers | head -1`) ends the process
/// quietly with status 0, as Unix tools do, instead of panicking.
fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("p2p-node: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
