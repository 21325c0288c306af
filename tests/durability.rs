//! Multi-process tests of the durable store: accepted tasks outlive a `kill -9` of their
//! gateway, and a data dir that cannot be used stops the node at start with one line.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, NodeProc, Spec, free_port, scratch, wait_schedulable};
use hyper::Method;
use p2p_network::cli::client::ClientError;
use serde_json::{Value, json};

/// A gateway on a fixed port (so its workers find it again after a restart) and `n` workers.
fn cluster(root: &std::path::Path, n: usize) -> (NodeProc, Vec<NodeProc>) {
    let gw = NodeProc::start(root, Spec::new("gateway", "bootstrap").port(free_port()));
    let addr = gw.p2p_addr();
    let workers: Vec<NodeProc> = (1..=n)
        .map(|i| {
            NodeProc::start(
                root,
                Spec::new(&format!("w{i}"), "worker").concurrency(8).bootstrap(std::slice::from_ref(&addr)),
            )
        })
        .collect();
    wait_schedulable(&gw, &workers);
    (gw, workers)
}

/// A seed on a fixed port, a gateway and 3 workers bootstrapping from it (each spec passed
/// through `spec`), once the gateway can schedule on every worker and sees every member alive.
fn seed_gateway_workers(root: &std::path::Path, spec: impl Fn(Spec) -> Spec) -> (NodeProc, NodeProc, Vec<NodeProc>) {
    let seed = NodeProc::start(root, Spec::new("seed", "bootstrap").port(free_port()));
    let boot = [seed.p2p_addr()];
    let gw = NodeProc::start(root, spec(Spec::new("gateway", "bootstrap").bootstrap(&boot)));
    let workers: Vec<NodeProc> = (1..=3)
        .map(|i| NodeProc::start(root, spec(Spec::new(&format!("w{i}"), "worker").concurrency(8).bootstrap(&boot))))
        .collect();
    wait_schedulable(&gw, &workers);
    common::wait_until(Duration::from_secs(15), "the gateway to see every member alive", || {
        let alive = gw.alive_peers();
        std::iter::once(&seed).chain(&workers).all(|n| alive.contains(&n.peer_id))
    });
    (seed, gw, workers)
}

fn submit_batch(gw: &NodeProc, tasks: &[Value]) -> Vec<String> {
    let r = gw.call("POST", "/v1/tasks/batch", Some(json!({ "tasks": tasks }))).expect("batch accepted");
    r["ids"].as_array().expect("ids").iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Polls every id until all are final (bounded); returns the final records by id.
fn wait_final(gw: &NodeProc, ids: &[String], within: Duration) -> HashMap<String, Value> {
    let mut done: HashMap<String, Value> = HashMap::new();
    let started = Instant::now();
    while done.len() < ids.len() {
        for id in ids.iter().filter(|id| !done.contains_key(*id)).cloned().collect::<Vec<_>>() {
            if let Ok(rec) = gw.get(&format!("/v1/tasks/{id}"))
                && matches!(rec["state"].as_str(), Some("completed" | "failed" | "cancelled"))
            {
                done.insert(id, rec);
            }
        }
        assert!(
            started.elapsed() < within,
            "{} of {} tasks final after {within:?}; gateway log tail:\n{}",
            done.len(),
            ids.len(),
            gw.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        if done.len() < ids.len() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    done
}

/// A moment to kill at: random, printed, and replayable with `P2P_KILL_AFTER_MS`.
fn kill_after(max_ms: u64) -> Duration {
    let ms = std::env::var("P2P_KILL_AFTER_MS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        u64::from(nanos) % max_ms
    });
    eprintln!("killing the gateway {ms} ms into the run (replay with P2P_KILL_AFTER_MS={ms})");
    Duration::from_millis(ms)
}

#[test]
fn every_accepted_task_reaches_one_final_state_across_a_kill_9_of_its_gateway() {
    let dir = scratch("gwkill");
    let (mut gw, workers) = cluster(dir.path(), 3);
    let tasks: Vec<Value> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                json!({"type": "echo", "payload": format!("p{i}")})
            } else {
                json!({"type": "sleep", "payload": format!("{}", 50 + (i * 37) % 451)})
            }
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in tasks.chunks(250) {
        ids.extend(submit_batch(&gw, chunk));
    }
    assert_eq!(ids.len(), 1000);
    std::thread::sleep(kill_after(3000));
    gw.restart(); // kill -9, then the same node again on the same data dir
    let started = Instant::now();
    let records = wait_final(&gw, &ids, Duration::from_secs(90));
    eprintln!("all 1000 final {:?} after the restart", started.elapsed());

    let worker_ids: Vec<&str> = workers.iter().map(|w| w.peer_id.as_str()).collect();
    let mut resumed = 0;
    for (i, id) in ids.iter().enumerate() {
        let rec = &records[id];
        assert_eq!(rec["state"], "completed", "{rec}");
        // The result came from a worker: it ran there at least once.
        assert!(worker_ids.contains(&rec["worker"].as_str().unwrap()), "{rec}");
        if i % 2 == 0 {
            assert_eq!(rec["result"], format!("p{i}"), "{rec}");
        }
        let history = rec["attempt_history"].as_array().unwrap();
        if history.iter().any(|a| a["error"].as_str().is_some_and(|e| e.contains("gateway restarted"))) {
            resumed += 1;
        }
    }
    // Execution is at least once across a crash; the final record exactly once.
    let executed: f64 = workers.iter().map(|w| w.metric_sum("p2p_tasks_executed_total")).sum();
    eprintln!(
        "{resumed} tasks were running at the kill and resumed; {} executions for 1000 tasks ({} ran twice)",
        executed,
        executed - 1000.0
    );
    assert!(executed >= 1000.0, "{executed} executions for 1000 completed tasks");
    // Final means final: a second look finds every record as it was.
    std::thread::sleep(Duration::from_secs(1));
    for id in ids.iter().step_by(7) {
        let again = gw.get(&format!("/v1/tasks/{id}")).unwrap();
        assert_eq!(again["state"], records[id]["state"], "{again}");
        assert_eq!(again["finished_at"], records[id]["finished_at"], "{again}");
    }
}

#[test]
fn a_kill_9_during_a_ten_thousand_task_batch_leaves_a_store_that_opens_and_tasks_that_end() {
    let dir = scratch("gwbatch");
    let (mut gw, _workers) = cluster(dir.path(), 2);
    let tasks: Vec<Value> = (0..10_000).map(|i| json!({"type": "echo", "payload": format!("b{i}")})).collect();
    let api = gw.api.clone();
    let submitter = std::thread::spawn(move || {
        common::block_on(api.call(
            hyper::Method::POST,
            "/v1/tasks/batch",
            Some(json!({ "tasks": tasks })),
            Duration::from_secs(30),
        ))
    });
    std::thread::sleep(kill_after(1500));
    gw.restart();
    let acknowledged: Vec<String> = match submitter.join().unwrap() {
        Ok(v) => v["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        Err(e) => {
            eprintln!("the batch was not acknowledged before the kill: {e}");
            Vec::new()
        }
    };
    // Whatever the store holds, acknowledged or not, ends final; so does every acknowledged
    // task, which may be missing from the store when the kill came between the copies'
    // acknowledgement and the local sync (the restarted gateway takes those back from their
    // copy holders).
    let held = gw.get("/v1/tasks?limit=10000").unwrap();
    let mut ids: Vec<String> =
        held["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    eprintln!("{} tasks acknowledged, {} held by the restarted gateway", acknowledged.len(), ids.len());
    ids.extend(acknowledged);
    ids.sort();
    ids.dedup();
    let records = wait_final(&gw, &ids, Duration::from_secs(90));
    assert!(records.values().all(|r| r["state"] == "completed"), "every held or acknowledged task completes");
    eprintln!("{} tasks taken back from copy holders", gw.metric_sum("p2p_tasks_reclaimed_total"));
}

#[test]
fn a_gateway_back_at_once_without_its_store_takes_its_tasks_back_from_their_copy_holders() {
    // The pod of a gateway whose key outlives its data dir (a Secret and an emptyDir), or a
    // kill between the copies' acknowledgement and the local sync: same peer id, records gone,
    // back long before anyone would adopt its tasks.
    let root = scratch("reclaim");
    let (seed, mut gw, workers) = seed_gateway_workers(root.path(), |s| s);
    let seed_and_workers: Vec<&NodeProc> = std::iter::once(&seed).chain(&workers).collect();
    let tasks: Vec<Value> =
        (0..200).map(|i| json!({"type": "sleep", "payload": format!("{}", 300 + (i * 37) % 401)})).collect();
    let ids = submit_batch(&gw, &tasks);
    assert_eq!(ids.len(), 200);
    // The copies are forwarded in the batch that acknowledged the tasks; their holders have
    // queued them long before this.
    std::thread::sleep(Duration::from_secs(1));
    gw.kill();
    std::fs::remove_dir_all(gw.dir.join("data")).unwrap();
    gw.restart();
    let held = gw.get("/v1/tasks?limit=1000").unwrap();
    eprintln!("the restarted gateway's store holds {} tasks", held["tasks"].as_array().unwrap().len());

    let started = Instant::now();
    let records = wait_final(&gw, &ids, Duration::from_secs(60));
    let reclaimed = gw.metric_sum("p2p_tasks_reclaimed_total");
    eprintln!("all 200 final {:?} after the restart; {reclaimed} taken back from copy holders", started.elapsed());
    assert!(reclaimed > 0.0, "no task was taken back");
    let adopted: f64 = seed_and_workers.iter().map(|n| n.metric_sum("p2p_tasks_adopted_total")).sum();
    assert_eq!(adopted, 0.0, "the gateway came back at once: nobody adopts its tasks");
    for id in &ids {
        let rec = &records[id];
        assert_eq!(rec["state"], "completed", "{rec}");
    }
    // The gateway holds them again itself: its own list (its store) has the last task, which
    // cannot have finished before the kill.
    let listed = gw.get("/v1/tasks?limit=1000").unwrap();
    let last = ids[ids.len() - 1].as_str();
    assert!(listed["tasks"].as_array().unwrap().iter().any(|t| t["id"] == last), "{last} not in {listed}");
}

/// Runs the node on `config` expecting it to refuse to start; returns its stderr.
fn start_error(config: &std::path::Path, as_user: Option<u32>) -> String {
    let mut cmd = match as_user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), BIN.into()]);
            c
        }
        None => Command::new(BIN),
    };
    let out = cmd.arg("--config").arg(config).arg("run").output().expect("run p2p-node");
    assert!(!out.status.success(), "the node started on a data dir it cannot use");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().to_string()
}

fn config_with_data_dir(dir: &std::path::Path, name: &str, data_dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "node:\n  role: bootstrap\n  listen_address: 127.0.0.1\n  listen_port: 0\n  identity_file: {name}.key\n  \
         data_dir: {data}\napi:\n  listen: \"127.0.0.1:{api}\"\nmetrics:\n  listen: \"127.0.0.1:{metrics}\"\n",
        data = json!(data_dir.display().to_string()),
        api = free_port(),
        metrics = free_port(),
    );
    std::fs::write(&config, yaml).unwrap();
    config
}

#[test]
fn a_data_dir_that_cannot_be_used_stops_the_start_with_one_line_naming_it() {
    let dir = scratch("datadir");
    // Not a directory.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let line = start_error(&config_with_data_dir(dir.path(), "file", &file), None);
    assert!(line.contains(&format!("node.data_dir {}: cannot create the directory", file.display())), "{line}");

    // Held by another node.
    let mut first = NodeProc::start(dir.path(), Spec::new("first", "bootstrap"));
    let line = start_error(&config_with_data_dir(dir.path(), "second", &first.dir.join("data")), None);
    assert!(line.contains("already in use by another process"), "{line}");
    first.kill();

    // Unreadable and read-only, for the user the node runs as. Root reads and writes
    // everything, so as root the node is run as `nobody`, as a pod's non-root user would be.
    use std::os::unix::fs::PermissionsExt;
    let uid = is_root().then_some(65534);
    let mode = |p: &std::path::Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(dir.path(), 0o777);
    // Unreadable: its database file is not the node's to read.
    let unreadable = dir.path().join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    mode(&unreadable, 0o777);
    std::fs::write(unreadable.join("node.redb"), b"").unwrap();
    mode(&unreadable.join("node.redb"), 0o000);
    // Read-only: nothing can be created in it.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    mode(&read_only, 0o555);
    for (name, data) in [("unreadable", &unreadable), ("read-only", &read_only)] {
        let line = start_error(&config_with_data_dir(dir.path(), name, data), uid);
        assert!(line.contains(&format!("node.data_dir {}: permission denied", data.display())), "{name}: {line}");
    }
}

/// Whether the test runs as root (from `id -u`, so no `unsafe` libc call is needed).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size_mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system has about `leave` bytes free.
fn fill_until(path: &std::path::Path, dir: &std::path::Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while fs4::available_space(dir).unwrap() > leave + chunk.len() as u64 {
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
    }
}

#[test]
fn a_data_dir_short_of_space_refuses_new_tasks_with_507_and_keeps_serving_the_stored_ones() {
    let root = scratch("disk-full");
    let Some(disk) = Tmpfs::mount(&root.path().join("small-disk"), 64) else {
        // Mounting needs root (CI runs as root); without it there is no small disk to fill.
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let gw = NodeProc::start(
        root.path(),
        Spec::new("gateway", "bootstrap").env("P2P_NODE__DATA_DIR", disk.0.join("store").display()),
    );
    let addr = gw.p2p_addr();
    let workers = vec![NodeProc::start(root.path(), Spec::new("w1", "worker").bootstrap(std::slice::from_ref(&addr)))];
    wait_schedulable(&gw, &workers);

    let echo = |payload: &str| json!({ "type": "echo", "payload": payload });
    let before = gw.call("POST", "/v1/tasks?wait=true", Some(echo("before"))).expect("accepted with room");
    assert_eq!(before["state"], "completed", "{before}");

    // Below the watermark (32 MiB free), with room left for the store itself.
    let filler = disk.0.join("filler");
    fill_until(&filler, &disk.0, 16 << 20);
    std::thread::sleep(Duration::from_millis(300)); // the free space is read at most every 100 ms
    let refused =
        common::block_on(gw.api.call(Method::POST, "/v1/tasks", Some(echo("refused")), Duration::from_secs(10)));
    match refused {
        Err(ClientError::Api { status, code, message }) => {
            assert_eq!((status, code.as_str()), (507, "store_full"), "{message}");
            assert!(message.contains("data dir is full"), "{message}");
        }
        other => panic!("expected 507 store_full, got {other:?}"),
    }
    let (code, _, stderr) = gw.cli(&["task", "echo", "refused"], None);
    assert_ne!(code, 0, "the CLI accepted a task on a full data dir");
    assert!(stderr.contains("data dir is full"), "CLI error: {stderr}");
    // What it holds is still served.
    let id = before["id"].as_str().unwrap();
    assert_eq!(gw.get(&format!("/v1/tasks/{id}")).expect("stored task served")["state"], "completed");

    // Space again: new tasks are taken.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = gw.call("POST", "/v1/tasks?wait=true", Some(echo("after"))).expect("accepted once space is back");
    assert_eq!(after["state"], "completed", "{after}");
    drop(workers);
    drop(gw);
}

#[test]
fn a_dht_value_outlives_a_kill_9_and_restart_of_every_node_holding_it() {
    let root = scratch("dht-restart");
    let (mut gw, mut workers) = cluster(root.path(), 2);
    let put = gw
        .call("POST", "/v1/tasks?wait=true", Some(json!({ "type": "storage", "payload": "put shade teal" })))
        .expect("put accepted");
    assert_eq!(put["state"], "completed", "{put}");
    let said = put["result"].as_str().unwrap_or_default();
    assert!(said.starts_with("stored shade on ") && !said.contains("partial"), "{said}");

    // Every node's memory goes; only what each wrote to its data dir is left.
    for node in workers.iter_mut().chain(std::iter::once(&mut gw)) {
        node.kill();
    }
    gw.restart();
    for w in &mut workers {
        w.restart();
    }
    wait_schedulable(&gw, &workers);
    let got = gw
        .call("POST", "/v1/tasks?wait=true", Some(json!({ "type": "storage", "payload": "get shade" })))
        .expect("get accepted");
    assert_eq!(got["state"], "completed", "{got}");
    assert_eq!(got["result"], "teal", "{got}");
    assert!(
        workers.iter().any(|w| w.log().contains("DHT records loaded from the store")),
        "no worker reloaded a record"
    );
    // The worker that published it puts it again once it has rejoined, not a day later.
    common::wait_until(Duration::from_secs(15), "the publisher to republish its record", || {
        workers.iter().any(|w| w.log().contains("republishing the DHT records this node published"))
    });
}

/// The executions every worker counted.
fn executions(workers: &[NodeProc]) -> f64 {
    workers.iter().map(|w| w.metric_sum("p2p_tasks_executed_total")).sum()
}

#[test]
fn a_lost_gateways_tasks_are_adopted_by_their_copy_holders_and_never_run_again_by_it() {
    let root = scratch("adopt");
    let (seed, mut gw, workers) = seed_gateway_workers(root.path(), |s| s.env("P2P_TASKS__ADOPT_AFTER_SECS", 2));
    let seed_and_workers: Vec<&NodeProc> = std::iter::once(&seed).chain(&workers).collect();

    let tasks: Vec<Value> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                json!({"type": "echo", "payload": format!("p{i}")})
            } else {
                json!({"type": "sleep", "payload": format!("{}", 50 + (i * 37) % 451)})
            }
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in tasks.chunks(250) {
        ids.extend(submit_batch(&gw, chunk));
    }
    // Every record names its copy holder, one of the other members.
    let first = gw.get(&format!("/v1/tasks/{}", ids[0])).unwrap();
    assert_eq!(first["owner"], gw.peer_id.as_str(), "{first}");
    let holder = first["copies"][0].as_str().expect("a copy holder is named").to_string();
    assert!(seed_and_workers.iter().any(|n| n.peer_id == holder), "{first}");

    // Permanent loss: the gateway dies and its data dir goes (kept aside to bring it back).
    std::thread::sleep(kill_after(3000));
    gw.kill();
    let data = gw.dir.join("data");
    let aside = gw.dir.join("data-aside");
    std::fs::rename(&data, &aside).unwrap();

    let started = Instant::now();
    // Takeover time: from the kill to the first task adopted (detection, then the 2 s grace).
    let adopted_sum = || seed_and_workers.iter().map(|n| n.metric_sum("p2p_tasks_adopted_total")).sum::<f64>();
    while adopted_sum() == 0.0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("first tasks adopted {:?} after the gateway was killed", started.elapsed());
    let records = wait_final(&seed, &ids, Duration::from_secs(120));
    eprintln!("all 1000 final {:?} after the gateway was lost", started.elapsed());
    let adopted: f64 = seed_and_workers.iter().map(|n| n.metric_sum("p2p_tasks_adopted_total")).sum();
    let worker_ids: Vec<&str> = workers.iter().map(|w| w.peer_id.as_str()).collect();
    for (i, id) in ids.iter().enumerate() {
        let rec = &records[id];
        assert_eq!(rec["state"], "completed", "{rec}");
        assert!(worker_ids.contains(&rec["worker"].as_str().unwrap()), "{rec}");
        if i % 2 == 0 {
            assert_eq!(rec["result"], format!("p{i}"), "{rec}");
        }
    }
    // Any node answers for any task, with the same final state.
    for id in ids.iter().step_by(13) {
        let other = workers[1].get(&format!("/v1/tasks/{id}")).unwrap();
        assert_eq!(other["state"], records[id]["state"], "{other}");
        assert_eq!(other["finished_at"], records[id]["finished_at"], "{other}");
    }
    let executed = executions(&workers);
    eprintln!("{adopted} tasks adopted; {executed} executions for 1000 tasks ({} ran twice)", executed - 1000.0);
    assert!(executed >= 1000.0, "{executed} executions for 1000 completed tasks");

    // The old gateway returns with its old data: it learns what was adopted and runs none of it.
    std::fs::rename(&aside, &data).unwrap();
    gw.restart();
    let back = Instant::now();
    while gw.metric_sum("p2p_tasks_handed_over_total") < adopted && back.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the returning gateway handed over {} tasks, took {} final records from their holders",
        gw.metric_sum("p2p_tasks_handed_over_total"),
        gw.metric_sum("p2p_tasks_final_from_copies_total")
    );
    // Longer than a restored task would wait for a holder that never answers.
    std::thread::sleep(Duration::from_secs(4));
    let resumed: Vec<String> =
        gw.log().lines().filter(|l| l.contains("resuming restored tasks")).map(String::from).collect();
    assert_eq!(
        executions(&workers),
        executed,
        "the returning gateway ran tasks again; it logged:\n{}",
        resumed.join("\n")
    );
    for id in ids.iter().step_by(17) {
        let back = gw.get(&format!("/v1/tasks/{id}")).unwrap();
        assert_eq!(back["state"], "completed", "{back}");
    }
}
