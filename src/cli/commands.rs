//! The interactive commands (`help`, `peers`, `status`, `capabilities`, `task ...`): parsed
//! from a line, executed against a node's HTTP API, and rendered for a terminal. The same
//! code serves the prompt, one-shot invocations and piped input.

use std::fmt::Write;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use super::client::{ApiClient, ClientError};

pub const HELP: &str = "\
Commands:
  help                         this text
  peers                        cluster members: id, role, state, address, RTT, direct/relayed, load
  status                       this node: peer id, role, addresses, NAT status, peers, DHT size, uptime
  capabilities                 this node's and the cluster's capabilities
  task <type> <payload...>     run a task and print its result (waits until it is final)
  submit <type> <payload...>   submit a task without waiting; prints its id
  task-status <id> [--timeline]  show a task's state, attempts and result; --timeline: what happened when
  cancel <id>                  cancel a pending or running task
  tasks                        recent tasks at this node
  balance [peer-id]            credits of this node's account (or another's)
  ledger [peer-id]             every account (balance, head, frozen) and the ledger's digest; with a
                               peer id: that account and its latest blocks
  module add <file.wasm>       upload a WebAssembly module (a WASI command); prints its id
  task wasm <module-id|file.wasm> <input...> [--replicas N] [--quorum Q]
                               run a module on the input (`-`: read it from stdin; a file is uploaded
                               first); with N replicas on distinct workers, Q of which must agree
Task types: compute <data> | storage put <key> <value> | storage get <key> | echo <text> | sleep <ms> | fail <message>
  | wasm <module> <input>";

/// Takes `--replicas N` and `--quorum Q` off the end of a `wasm` task's input.
fn redundancy_flags(input: &str) -> Result<(String, Option<u32>, Option<u32>), String> {
    let mut words: Vec<&str> = input.split(' ').collect();
    let (mut replicas, mut quorum) = (None, None);
    while words.len() >= 2 {
        let flag = words[words.len() - 2];
        let slot = match flag {
            "--replicas" => &mut replicas,
            "--quorum" => &mut quorum,
            _ => break,
        };
        let value = words[words.len() - 1];
        let n = value.parse::<u32>().map_err(|_| format!("{flag} takes a number, not {value:?}"))?;
        if slot.replace(n).is_some() {
            return Err(format!("{flag} given twice"));
        }
        words.truncate(words.len() - 2);
    }
    Ok((words.join(" ").trim_end().to_string(), replicas, quorum))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Peers,
    Status,
    Capabilities,
    Task {
        task_type: String,
        payload: String,
        wait: bool,
    },
    /// A `wasm` task: `module` is an id or a file to upload first; `input` `-` is stdin.
    Wasm {
        module: String,
        input: String,
        wait: bool,
        /// Verification by redundancy: replicas on distinct workers, and how many must agree.
        replicas: Option<u32>,
        quorum: Option<u32>,
    },
    ModuleAdd(String),
    TaskStatus {
        id: String,
        timeline: bool,
    },
    Cancel(String),
    Tasks,
    /// Credits of an account (this node's when `None`).
    Balance(Option<String>),
    /// The ledger, or one account's chain.
    Ledger(Option<String>),
    Quit,
}

impl Command {
    /// Parses one command line; `Ok(None)` for a blank line.
    pub fn parse(line: &str) -> Result<Option<Self>, String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let one_arg = |name: &str| -> Result<String, String> {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                Err(format!("usage: {name} <id>"))
            } else {
                Ok(rest.to_string())
            }
        };
        let no_args =
            |cmd: Command| if rest.is_empty() { Ok(Some(cmd)) } else { Err(format!("{word} takes no arguments")) };
        match word {
            "help" | "?" => no_args(Command::Help),
            "peers" => no_args(Command::Peers),
            "status" => no_args(Command::Status),
            "capabilities" => no_args(Command::Capabilities),
            "tasks" => no_args(Command::Tasks),
            "quit" | "exit" => no_args(Command::Quit),
            "task" | "submit" => {
                let (task_type, payload) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                if task_type.is_empty() {
                    return Err(format!("usage: {word} <type> <payload...>"));
                }
                if task_type == "wasm" {
                    let payload = payload.trim_start();
                    let (module, input) = payload.split_once(char::is_whitespace).unwrap_or((payload, ""));
                    if module.is_empty() {
                        return Err(format!("usage: {word} wasm <module-id|file.wasm> <input...>"));
                    }
                    let (input, replicas, quorum) = redundancy_flags(input.trim_start())?;
                    return Ok(Some(Command::Wasm {
                        module: module.to_string(),
                        input,
                        wait: word == "task",
                        replicas,
                        quorum,
                    }));
                }
                Ok(Some(Command::Task {
                    task_type: task_type.to_string(),
                    payload: payload.trim_start().to_string(),
                    wait: word == "task",
                }))
            }
            "task-status" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                match words.as_slice() {
                    [id] | [id, "--timeline"] | ["--timeline", id] if !id.starts_with("--") => {
                        Ok(Some(Command::TaskStatus { id: id.to_string(), timeline: words.len() == 2 }))
                    }
                    _ => Err("usage: task-status <id> [--timeline]".into()),
                }
            }
            "cancel" => Ok(Some(Command::Cancel(one_arg(word)?))),
            "balance" | "ledger" => {
                let peer = match rest {
                    "" => None,
                    r if !r.contains(char::is_whitespace) => Some(r.to_string()),
                    _ => return Err(format!("usage: {word} [peer-id]")),
                };
                Ok(Some(if word == "balance" { Command::Balance(peer) } else { Command::Ledger(peer) }))
            }
            "module" => match rest.split_once(char::is_whitespace) {
                Some(("add", file)) if !file.trim().is_empty() => Ok(Some(Command::ModuleAdd(file.trim().to_string()))),
                _ => Err("usage: module add <file.wasm>".into()),
            },
            other => Err(format!("unknown command {other:?}; type `help` for the list")),
        }
    }
}

/// Runs a command; `Ok(text)` to print on success, `Err(text)` for a failure (non-zero exit).
pub async fn execute(api: &ApiClient, cmd: &Command) -> Result<String, String> {
    let err = |e: ClientError| e.to_string();
    match cmd {
        Command::Help => Ok(HELP.to_string()),
        Command::Quit => Ok(String::new()),
        Command::Peers => api.get("/v1/peers").await.map(|v| render_peers(&v)).map_err(err),
        Command::Status => api.get("/v1/status").await.map(|v| render_status(&v)).map_err(err),
        Command::Capabilities => api.get("/v1/capabilities").await.map(|v| render_capabilities(&v)).map_err(err),
        Command::Tasks => api.get("/v1/tasks?limit=20").await.map(|v| render_tasks(&v)).map_err(err),
        Command::TaskStatus { id, timeline } => {
            api.get(&format!("/v1/tasks/{id}"))
                .await
                .map(|v| {
                    if *timeline {
                        format!("{}\n{}", render_record(&v), render_timeline(&v))
                    } else {
                        render_record(&v)
                    }
                })
                .map_err(err)
        }
        Command::Cancel(id) => api
            .call(Method::DELETE, &format!("/v1/tasks/{id}"), None, Duration::from_secs(10))
            .await
            .map(|v| render_record(&v))
            .map_err(err),
        Command::ModuleAdd(file) => upload(api, file).await,
        Command::Balance(peer) => {
            let peer = match peer {
                Some(p) => p.clone(),
                None => s(&api.get("/v1/ledger").await.map_err(err)?["peer"]),
            };
            let a = api.get(&format!("/v1/ledger/accounts/{peer}")).await.map_err(err)?;
            Ok(render_account(&a))
        }
        Command::Ledger(None) => api.get("/v1/ledger").await.map(|v| render_ledger(&v)).map_err(err),
        Command::Ledger(Some(peer)) => {
            let a = api.get(&format!("/v1/ledger/accounts/{peer}")).await.map_err(err)?;
            let mut out = render_account(&a);
            let head = a["seq"].as_u64().unwrap_or(0);
            for seq in (head.saturating_sub(4).max(1)..=head).rev() {
                let b = api.get(&format!("/v1/ledger/blocks/{peer}/{seq}")).await.map_err(err)?;
                let entries = b["entries"].as_array().cloned().unwrap_or_default();
                let paid: u64 = entries.iter().filter_map(|e| e["amount"].as_u64()).sum();
                let tasks: u64 = entries.iter().filter_map(|e| e["tasks"].as_u64()).sum();
                let _ = write!(
                    out,
                    "\n  block {seq}: {} credits to {} account(s) for {tasks} task(s), {} bytes, hash {}",
                    paid,
                    entries.len(),
                    b["bytes"],
                    s(&b["hash"]).chars().take(16).collect::<String>()
                );
            }
            Ok(out)
        }
        Command::Wasm { module, input, wait, replicas, quorum } => {
            let module = match module.parse::<crate::wasm::ModuleId>() {
                Ok(id) => id.to_string(),
                Err(_) => upload(api, module).await?,
            };
            let input = if input == "-" {
                let mut text = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text)
                    .await
                    .map_err(|e| format!("cannot read the input from stdin: {e}"))?;
                text
            } else {
                input.clone()
            };
            let mut body = json!({"type": "wasm", "module": module, "payload": input});
            if let Some(n) = replicas {
                body["replicas"] = json!(n);
            }
            if let Some(q) = quorum {
                body["quorum"] = json!(q);
            }
            submit(api, body, *wait).await
        }
        Command::Task { task_type, payload, wait } => {
            submit(api, json!({"type": task_type, "payload": payload}), *wait).await
        }
    }
}

/// Uploads a module file; its id.
async fn upload(api: &ApiClient, file: &str) -> Result<String, String> {
    let bytes = tokio::fs::read(file).await.map_err(|e| format!("{file}: {e}"))?;
    let v = api.post_bytes("/v1/modules", bytes).await.map_err(|e| format!("{file}: {e}"))?;
    v["id"].as_str().map(str::to_string).ok_or_else(|| format!("unexpected answer to an upload: {v}"))
}

/// Submits a task body; with `wait`, its record (an error unless completed), else its id.
async fn submit(api: &ApiClient, body: Value, wait: bool) -> Result<String, String> {
    let path = if wait { "/v1/tasks?wait=true" } else { "/v1/tasks" };
    // Waiting covers every attempt with backoff; the node bounds that, not us.
    let v =
        api.call(Method::POST, path, Some(body), Duration::from_secs(24 * 3600)).await.map_err(|e| e.to_string())?;
    if !wait {
        return Ok(v["id"].as_str().unwrap_or("?").to_string());
    }
    let text = render_record(&v);
    if v["state"] == "completed" { Ok(text) } else { Err(text) }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `id` shortened to its first 8 and last 6 characters (characters, not bytes: an id from a
/// peer or a user may hold anything).
fn short(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() > 16 {
        let head: String = chars[..8].iter().collect();
        let tail: String = chars[chars.len() - 6..].iter().collect();
        format!("{head}…{tail}")
    } else {
        id.to_string()
    }
}

pub fn render_peers(v: &Value) -> String {
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    let mut out = format!("{} peer(s)\n", peers.len());
    let _ = writeln!(
        out,
        "{:<54} {:<9} {:<7} {:<8} {:>9} {:<6} {:>6} {:<24} ADDRESS",
        "PEER ID", "ROLE", "STATE", "CONN", "RTT", "LOAD", "SCORE", "CAPABILITIES"
    );
    for p in peers {
        let rtt = p["rtt_ms"].as_f64().map_or("-".to_string(), |r| format!("{r:.2}ms"));
        let caps: Vec<String> = p["capabilities"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
        let addr = p["addresses"].as_array().and_then(|a| a.first()).map(s).unwrap_or_else(|| "-".into());
        // GossipSub score; below -80 the peer is graylisted (docs/security.md).
        let score = p["gossip_score"].as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        let _ = writeln!(
            out,
            "{:<54} {:<9} {:<7} {:<8} {:>9} {:<6} {:>6} {:<24} {}",
            s(&p["peer_id"]),
            s(&p["role"]),
            s(&p["state"]),
            s(&p["connection"]),
            rtt,
            format!("{}/{}", p["load"], p["capacity"]),
            score,
            caps.join(","),
            addr
        );
    }
    out.trim_end().to_string()
}

pub fn render_status(v: &Value) -> String {
    let list = |v: &Value| v.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let m = &v["members"];
    let t = &v["tasks"];
    format!(
        "peer id:        {}\nrole:           {}\nversion:        {} (protocol {})\nlisten:         {}\nexternal:       {}\nNAT status:     {}\npeers:          {} connected; members alive {} suspect {} dead {} left {}; local health {}\nDHT routing:    {} entries\nuptime:         {} s\nready:          {}\ntasks:          {} queued, {} running (gateway), {} executing (worker)",
        s(&v["peer_id"]),
        s(&v["role"]),
        s(&v["version"]),
        s(&v["protocol_version"]),
        list(&v["listen_addresses"]),
        list(&v["external_addresses"]),
        s(&v["nat_status"]),
        v["connected_peers"],
        m["alive"],
        m["suspect"],
        m["dead"],
        m["left"],
        v["local_health"],
        v["routing_table_size"],
        v["uptime_secs"],
        v["ready"],
        t["queued"],
        t["running"],
        t["executing"],
    )
}

pub fn render_capabilities(v: &Value) -> String {
    let l = &v["local"];
    let caps: Vec<String> = l["capabilities"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
    let mut out = format!(
        "this node: {} (capacity {}, load {})\ncluster:\n",
        if caps.is_empty() { "-".to_string() } else { caps.join(", ") },
        l["capacity"],
        l["load"]
    );
    if let Some(cluster) = v["cluster"].as_object() {
        for (cap, c) in cluster {
            let _ = writeln!(
                out,
                "  {:<14} {} alive of {} node(s)",
                cap,
                c["alive_workers"],
                c["workers"].as_array().map_or(0, |a| a.len())
            );
        }
    }
    out.trim_end().to_string()
}

/// One ledger account.
pub fn render_account(a: &Value) -> String {
    let mut out = format!(
        "{}: balance {} credits (spendable {}), {} block(s)",
        s(&a["peer"]),
        a["balance"],
        a["spendable"],
        a["seq"]
    );
    if a["frozen"].as_bool() == Some(true) {
        let _ = write!(out, ", FROZEN from block {} (it equivocated)", a["frozen_from"]);
    }
    out
}

/// The ledger: every account, and the digest to compare across nodes.
pub fn render_ledger(v: &Value) -> String {
    let accounts = v["accounts"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "ledger digest {} ({} accounts; this node owes {} credits in {} unsealed payment(s))\n{:<54} {:>12} {:>7} frozen",
        s(&v["digest"]),
        accounts.len(),
        v["credits_owed"],
        v["payments_waiting"],
        "account",
        "balance",
        "blocks"
    );
    for a in &accounts {
        let frozen =
            if a["frozen"].as_bool() == Some(true) { format!("from {}", a["frozen_from"]) } else { "-".into() };
        let _ = write!(out, "\n{:<54} {:>12} {:>7} {frozen}", s(&a["peer"]), a["balance"], a["seq"]);
    }
    out
}

pub fn render_record(v: &Value) -> String {
    let mut out = format!(
        "task {} ({}) {} after {} attempt(s) on {}",
        s(&v["id"]),
        s(&v["type"]),
        s(&v["state"]),
        v["attempts"],
        short(&s(&v["worker"]))
    );
    if !v["result"].is_null() {
        let _ = write!(out, "\nresult: {}", s(&v["result"]));
    }
    if !v["error"].is_null() {
        let _ = write!(out, "\nerror: {}", s(&v["error"]));
    }
    if let Some(fuel) = v["fuel_used"].as_u64() {
        let _ = write!(out, "\nfuel used: {fuel}");
    }
    if let Some(payment) = v["payment"].as_object() {
        let paid: Vec<String> = payment["paid"]
            .as_array()
            .map(|a| a.iter().map(|p| format!("{} to {}", p["credits"], short(&s(&p["worker"])))).collect())
            .unwrap_or_default();
        let how = payment["verified_by"].as_str().unwrap_or("not verified");
        let paid = if paid.is_empty() { "nothing".to_string() } else { paid.join(", ") };
        let _ = write!(out, "\npaid: {paid} ({how}; {})", s(&payment["reason"]));
    }
    if let Some(replicas) = v["replica_results"].as_array() {
        let _ = write!(out, "\nreplicas ({} must agree):", v["quorum"]);
        for r in replicas {
            let verdict = match r["agreed"].as_bool() {
                Some(true) => "agreed",
                Some(false) => "MINORITY",
                None => "-",
            };
            let hash = r["output_sha256"].as_str().map_or_else(|| "-".to_string(), |h| h.chars().take(16).collect());
            let _ = write!(
                out,
                "\n  {} {:<9} on {:<16} sha256 {} {}",
                s(&r["task"]),
                s(&r["state"]),
                short(&s(&r["worker"])),
                hash,
                verdict
            );
        }
    }
    out
}

/// A task's timeline as a table: when (UTC, and milliseconds since submission), attempt,
/// event, worker, detail.
pub fn render_timeline(v: &Value) -> String {
    let events = v["timeline"].as_array().cloned().unwrap_or_default();
    let mut out = format!("trace id: {}\n", s(&v["trace_id"]));
    if events.is_empty() {
        out.push_str("no timeline recorded");
        return out;
    }
    let first = events.iter().filter_map(|e| e["at_ms"].as_u64()).min().unwrap_or(0);
    let _ = writeln!(out, "{:<24} {:>9} {:>7}  {:<14} {:<16} DETAIL", "AT (UTC)", "+MS", "ATTEMPT", "EVENT", "WORKER");
    for e in events {
        let at = e["at_ms"].as_u64().unwrap_or(0);
        let when = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at)).to_string();
        let worker = e["worker"].as_str().map_or_else(|| "-".to_string(), short);
        let detail = e["detail"].as_str().unwrap_or("");
        let line = format!(
            "{:<24} {:>9} {:>7}  {:<14} {:<16} {}",
            when,
            at as i64 - first as i64,
            e["attempt"].as_u64().unwrap_or(0),
            s(&e["event"]),
            worker,
            detail
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.trim_end().to_string()
}

pub fn render_tasks(v: &Value) -> String {
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    let mut out = format!("{} task(s)\n", tasks.len());
    for t in tasks {
        let _ =
            writeln!(out, "{}  {:<8} {:<10} attempts {}", s(&t["id"]), s(&t["type"]), s(&t["state"]), t["attempts"]);
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_promised_commands() {
        assert_eq!(Command::parse("peers").unwrap(), Some(Command::Peers));
        assert_eq!(Command::parse("  \n").unwrap(), None);
        assert_eq!(
            Command::parse("task compute test_payload").unwrap(),
            Some(Command::Task { task_type: "compute".into(), payload: "test_payload".into(), wait: true })
        );
        assert_eq!(
            Command::parse("submit storage put k some value").unwrap(),
            Some(Command::Task { task_type: "storage".into(), payload: "put k some value".into(), wait: false })
        );
        assert_eq!(Command::parse("cancel abc").unwrap(), Some(Command::Cancel("abc".into())));
        assert_eq!(Command::parse("balance").unwrap(), Some(Command::Balance(None)));
        assert_eq!(Command::parse("balance 12D3K").unwrap(), Some(Command::Balance(Some("12D3K".into()))));
        assert_eq!(Command::parse("ledger").unwrap(), Some(Command::Ledger(None)));
        assert_eq!(Command::parse("ledger 12D3K").unwrap(), Some(Command::Ledger(Some("12D3K".into()))));
        assert!(Command::parse("ledger a b").unwrap_err().contains("usage: ledger [peer-id]"));
        assert_eq!(
            Command::parse("task-status abc").unwrap(),
            Some(Command::TaskStatus { id: "abc".into(), timeline: false })
        );
        assert_eq!(
            Command::parse("task-status abc --timeline").unwrap(),
            Some(Command::TaskStatus { id: "abc".into(), timeline: true })
        );
        assert!(Command::parse("task-status --timeline").unwrap_err().contains("usage"));
        assert!(Command::parse("task-status a b").unwrap_err().contains("usage"));
        assert_eq!(Command::parse("module add m.wasm").unwrap(), Some(Command::ModuleAdd("m.wasm".into())));
        assert_eq!(
            Command::parse("task wasm m.wasm the quick  fox").unwrap(),
            Some(Command::Wasm {
                module: "m.wasm".into(),
                input: "the quick  fox".into(),
                wait: true,
                replicas: None,
                quorum: None
            })
        );
        assert_eq!(
            Command::parse("submit wasm sha256:ab -").unwrap(),
            Some(Command::Wasm {
                module: "sha256:ab".into(),
                input: "-".into(),
                wait: false,
                replicas: None,
                quorum: None
            })
        );
        assert_eq!(
            Command::parse("task wasm m.wasm a b --replicas 3 --quorum 2").unwrap(),
            Some(Command::Wasm {
                module: "m.wasm".into(),
                input: "a b".into(),
                wait: true,
                replicas: Some(3),
                quorum: Some(2)
            })
        );
        assert_eq!(
            Command::parse("task wasm m.wasm - --replicas 3").unwrap(),
            Some(Command::Wasm {
                module: "m.wasm".into(),
                input: "-".into(),
                wait: true,
                replicas: Some(3),
                quorum: None
            })
        );
        assert!(
            Command::parse("task wasm m.wasm x --replicas three").unwrap_err().contains("--replicas takes a number")
        );
        assert!(Command::parse("task wasm m.wasm x --quorum 1 --quorum 2").unwrap_err().contains("given twice"));
        assert_eq!(
            Command::parse("task wasm m.wasm").unwrap(),
            Some(Command::Wasm { module: "m.wasm".into(), input: "".into(), wait: true, replicas: None, quorum: None })
        );
        assert!(Command::parse("module add").unwrap_err().contains("usage"));
        assert!(Command::parse("task wasm").unwrap_err().contains("usage"));
    }

    #[test]
    fn short_ids_cut_on_characters_not_bytes() {
        assert_eq!(short("12D3KooWEQAaHMRhqxwtXoFVY5kbP8ketwibx89xHCCJi1YHYhN4"), "12D3KooW…YHYhN4");
        assert_eq!(short("short"), "short");
        // Multibyte characters at both cut points: bytes would split a character and panic.
        let odd = "ééééééééééééééééééé";
        assert_eq!(short(odd), "éééééééé…éééééé");
        assert_eq!(short("ééé"), "ééé");
    }

    #[test]
    fn the_timeline_renders_as_a_table() {
        let v = json!({
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "timeline": [
                {"at_ms": 1_795_308_569_534u64, "attempt": 0, "event": "queued"},
                {"at_ms": 1_795_308_569_535u64, "attempt": 1, "event": "dispatched",
                 "worker": "12D3KooWEQAaHMRhqxwtXoFVY5kbP8ketwibx89xHCCJi1YHYhN4"},
                {"at_ms": 1_795_308_570_000u64, "attempt": 1, "event": "attempt_failed", "detail": "worker lost"},
            ]
        });
        let table = render_timeline(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "trace id: 4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(lines[1].starts_with("AT (UTC)"), "{table}");
        assert!(lines[2].contains("queued") && lines[2].contains(" 0 "), "{table}");
        // Columns line up: the attempt right-aligned under its header, no trailing blanks.
        assert_eq!(lines[3].find("      1  dispatched"), lines[1].find("ATTEMPT"), "{table}");
        assert!(table.lines().all(|l| !l.ends_with(' ')), "{table:?}");
        assert!(lines[3].contains("dispatched") && lines[3].contains("12D3KooW…YHYhN4"), "{table}");
        assert!(lines[4].contains("attempt_failed") && lines[4].contains("466") && lines[4].ends_with("worker lost"));
        assert!(render_timeline(&json!({"trace_id": ""})).contains("no timeline"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(Command::parse("dance").unwrap_err().contains("unknown command"));
        assert!(Command::parse("task").unwrap_err().contains("usage"));
        assert!(Command::parse("cancel").unwrap_err().contains("usage"));
        assert!(Command::parse("peers now").unwrap_err().contains("no arguments"));
    }
}
