//! Multi-process tests of WebAssembly tasks: modules uploaded on one node run on a worker
//! that has never seen them (fetched from the gateway, hash-checked), the examples give their
//! known answers, limits end runaway modules without retries, bad uploads are refused.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProc, Spec, block_on, scratch, task_cluster, wait_until};
use p2p_network::cli::client::ClientError;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm");

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{EXAMPLES}/{name}.wasm")).expect("the example modules are committed")
}

/// Uploads a module; its id, or the API's (status, code, message).
fn upload(node: &NodeProc, bytes: Vec<u8>) -> Result<String, (u16, String, String)> {
    match block_on(node.api.post_bytes("/v1/modules", bytes)) {
        Ok(v) => Ok(v["id"].as_str().expect("an id").to_string()),
        Err(ClientError::Api { status, code, message }) => Err((status, code, message)),
        Err(e) => panic!("upload: {e}"),
    }
}

/// Runs a wasm task to its final record.
fn run(node: &NodeProc, module: &str, input: &str, args: &[&str]) -> Value {
    node.call(
        "POST",
        "/v1/tasks?wait=true",
        Some(json!({"type": "wasm", "module": module, "payload": input, "args": args, "timeout_ms": 20000})),
    )
    .expect("accepted")
}

fn wasm_worker(name: &str) -> Spec {
    Spec::new(name, "worker").caps(&["wasm"])
}

#[test]
fn modules_uploaded_on_the_gateway_run_on_a_worker_that_never_saw_them() {
    let dir = scratch("wasm-examples");
    let (gw, workers) = task_cluster(dir.path(), vec![wasm_worker("w1")]);
    let worker = &workers[0];

    let wordcount = upload(&gw, example("wordcount")).unwrap();
    let sha256 = upload(&gw, example("sha256")).unwrap();
    let primes = upload(&gw, example("primes")).unwrap();
    assert_eq!(gw.get(&format!("/v1/modules/{primes}")).unwrap()["size"], example("primes").len());
    assert!(worker.get(&format!("/v1/modules/{primes}")).unwrap_err().contains("no module"));

    let started = Instant::now();
    let record = run(&gw, &wordcount, "the quick brown fox\njumps over\n", &[]);
    eprintln!("cold start (fetch, compile, run): {:?}", started.elapsed());
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["result"], "2 6 31\n");
    assert_eq!(record["worker"], worker.peer_id.as_str());

    let record = run(&gw, &sha256, "abc", &[]);
    assert_eq!(record["result"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n", "{record}");
    let record = run(&gw, &primes, "1000000", &[]);
    assert_eq!(record["result"], "78498 999983\n", "{record}");
    let record = run(&gw, &primes, "", &["100"]);
    assert_eq!(record["result"], "25 97\n", "{record}");
    // A non-zero exit is the task's own failure: reported, not retried.
    let record = run(&gw, &primes, "lots", &[]);
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    assert!(record["error"].as_str().unwrap().contains("exited with status 2"), "{record}");

    // The worker kept what it fetched.
    assert_eq!(worker.get(&format!("/v1/modules/{primes}")).unwrap()["size"], example("primes").len());
    let started = Instant::now();
    assert_eq!(run(&gw, &wordcount, "one two", &[])["result"], "0 2 7\n");
    eprintln!("warm task: {:?}", started.elapsed());

    // The CLI: upload a file, run a file with the input on stdin.
    let file = format!("{EXAMPLES}/sha256.wasm");
    let (code, out, err) = gw.cli(&["module", "add", &file], None);
    assert_eq!((code, out.trim()), (0, sha256.as_str()), "{err}");
    let (code, out, err) = gw.cli(&["task", "wasm", &file, "-"], Some("abc"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "{out}");
}

#[test]
fn runaway_modules_end_at_their_limits_and_the_worker_keeps_serving() {
    let dir = scratch("wasm-limits");
    let worker =
        wasm_worker("w1").env("P2P_WASM__MAX_FUEL", 500_000_000).env("P2P_WASM__MAX_MEMORY_BYTES", 16 * 1024 * 1024);
    let (gw, _workers) = task_cluster(dir.path(), vec![worker]);

    let spin = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#);
    let spin = upload(&gw, spin.unwrap()).unwrap();
    let started = Instant::now();
    let record = run(&gw, &spin, "", &[]);
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["attempts"], 1, "out of fuel is not retried: {record}");
    assert!(record["error"].as_str().unwrap().contains("out of fuel"), "{record}");
    assert!(started.elapsed() < Duration::from_secs(20), "ended by fuel, not by the deadline");

    let bomb = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start")
               (if (i32.eq (memory.grow (i32.const 4096)) (i32.const -1)) (then unreachable))))"#,
    );
    let bomb = upload(&gw, bomb.unwrap()).unwrap();
    let record = run(&gw, &bomb, "", &[]);
    assert_eq!(record["state"], "failed", "{record}");
    assert!(record["error"].as_str().unwrap().contains("out of memory"), "{record}");

    // Still serving.
    let wordcount = upload(&gw, example("wordcount")).unwrap();
    assert_eq!(run(&gw, &wordcount, "still here", &[])["result"], "0 2 10\n");
}

#[test]
fn bad_uploads_and_unknown_modules_are_refused_with_the_reason() {
    let dir = scratch("wasm-refusals");
    let boot =
        NodeProc::start(dir.path(), Spec::new("bootstrap", "bootstrap").env("P2P_WASM__MAX_MODULE_BYTES", 100_000));

    let (status, code, message) = upload(&boot, b"#!/bin/sh\necho not a module\n".to_vec()).unwrap_err();
    assert_eq!((status, code.as_str()), (400, "invalid_module"), "{message}");
    assert!(message.contains("not WebAssembly"), "{message}");

    let mut big = b"\0asm\x01\0\0\0".to_vec();
    big.resize(200_000, 0);
    let (status, code, message) = upload(&boot, big).unwrap_err();
    assert_eq!((status, code.as_str()), (400, "invalid_module"), "{message}");
    assert!(message.contains("wasm.max_module_bytes (100000)"), "{message}");

    let foreign = wat::parse_str(
        r#"(module (import "env" "launch_missiles" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    );
    let (status, _, message) = upload(&boot, foreign.unwrap()).unwrap_err();
    assert_eq!(status, 400);
    assert!(message.contains("env::launch_missiles"), "{message}");

    let library = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run")))"#);
    let (_, _, message) = upload(&boot, library.unwrap()).unwrap_err();
    assert!(message.contains("not a WASI command"), "{message}");

    let unknown = format!("sha256:{}", "ab".repeat(32));
    let body = json!({"type": "wasm", "module": unknown, "payload": "x"});
    let e = boot.call("POST", "/v1/tasks", Some(body)).unwrap_err();
    assert!(e.contains("no module") && e.contains(&unknown), "{e}");
    let e = boot.call("POST", "/v1/tasks", Some(json!({"type": "wasm", "module": "sha256:xyz"}))).unwrap_err();
    assert!(e.contains("field module"), "{e}");
    let e =
        boot.call("POST", "/v1/tasks", Some(json!({"type": "echo", "payload": "x", "module": unknown}))).unwrap_err();
    assert!(e.contains("only for type wasm"), "{e}");
    assert!(boot.get("/v1/modules/nonsense").unwrap_err().contains("not a module id"));
    // The node is fine after all that.
    assert!(boot.get("/v1/status").is_ok());
}

#[test]
fn replicas_outvote_a_worker_that_corrupts_its_results() {
    let dir = scratch("wasm-replicas");
    // w3 is dishonest: `wasm.test_corrupt_output` (a test-only switch) alters its results.
    let faulty = wasm_worker("w3").env("P2P_WASM__TEST_CORRUPT_OUTPUT", "true");
    let (gw, workers) = task_cluster(dir.path(), vec![wasm_worker("w1"), wasm_worker("w2"), faulty]);
    let faulty = workers[2].peer_id.clone();
    let sha256 = upload(&gw, example("sha256")).unwrap();
    let honest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";

    let submit = || {
        let body = json!({"type": "wasm", "module": sha256, "payload": "abc", "replicas": 3, "quorum": 2,
            "timeout_ms": 20000});
        gw.call("POST", "/v1/tasks?wait=true", Some(body)).expect("accepted")
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let record = submit();
        assert_eq!(record["state"], "completed", "{record}");
        assert_eq!(record["result"], honest, "{record}");
        assert!(record["fuel_used"].as_u64().unwrap() > 0, "{record}");
        ids.push(record["id"].as_str().unwrap().to_string());
    }
    // Every replica judged (a late one too): the dishonest worker is the minority each time.
    for id in &ids {
        let mut record = Value::Null;
        wait_until(Duration::from_secs(10), "every replica to be judged", || {
            record = gw.get(&format!("/v1/tasks/{id}")).unwrap();
            record["replica_results"].as_array().unwrap().iter().all(|r| !r["agreed"].is_null())
        });
        let replicas = record["replica_results"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{record}");
        let mut seen: Vec<&str> = replicas.iter().map(|r| r["worker"].as_str().unwrap()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3, "replicas on distinct workers: {record}");
        for r in replicas {
            let from_faulty = r["worker"] == faulty.as_str();
            assert_eq!(r["agreed"], !from_faulty, "{record}");
        }
        // A replica is a task of its own: its record names the task it ran for.
        let replica = gw.get(&format!("/v1/tasks/{id}.r1")).unwrap();
        assert_eq!(replica["replica_of"], id.as_str(), "{replica}");
    }
    assert_eq!(gw.metric_sum("p2p_replicas_minority_total"), 3.0);
    // Three strikes: its GossipSub score at the gateway is well below zero.
    let score = || {
        gw.get("/v1/peers").unwrap()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer_id"] == faulty.as_str())
            .and_then(|p| p["gossip_score"].as_f64())
    };
    wait_until(Duration::from_secs(5), "the dishonest worker's score to drop", || score().is_some_and(|s| s < -50.0));
    for honest_worker in &workers[..2] {
        let s = gw.get("/v1/peers").unwrap()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer_id"] == honest_worker.peer_id.as_str())
            .and_then(|p| p["gossip_score"].as_f64());
        assert!(s.is_none_or(|s| s >= 0.0), "honest workers keep their score: {s:?}");
    }

    // Not enough workers for the replicas asked for: refused with the reason.
    let body = json!({"type": "wasm", "module": sha256, "payload": "abc", "replicas": 5});
    let e = gw.call("POST", "/v1/tasks", Some(body)).unwrap_err();
    assert!(e.contains("5 replicas need 5 distinct workers"), "{e}");
    // The CLI asks for replicas too.
    let (code, out, err) = gw.cli(&["task", "wasm", &sha256, "abc", "--replicas", "3", "--quorum", "2"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(honest.trim()) && out.contains("replicas (2 must agree)"), "{out}");
}

#[test]
fn a_worker_killed_mid_run_has_its_wasm_task_retried_elsewhere() {
    let dir = scratch("wasm-killed");
    let (gw, mut workers) = task_cluster(dir.path(), vec![wasm_worker("w1"), wasm_worker("w2")]);
    // Counts to 400 million: a few seconds of work, then exits with nothing on stdout.
    let count = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (local $i i64)
               (loop $l
                 (local.set $i (i64.add (local.get $i) (i64.const 1)))
                 (br_if $l (i64.lt_u (local.get $i) (i64.const 400000000))))))"#,
    );
    let count = upload(&gw, count.unwrap()).unwrap();
    let body = json!({"type": "wasm", "module": count, "timeout_ms": 60000});
    let id = gw.call("POST", "/v1/tasks", Some(body)).expect("accepted")["id"].as_str().unwrap().to_string();
    let mut first = String::new();
    wait_until(Duration::from_secs(10), "the task to start on a worker", || {
        let r = gw.get(&format!("/v1/tasks/{id}")).unwrap();
        first = r["worker"].as_str().unwrap_or_default().to_string();
        r["state"] == "running"
    });
    let victim = workers.iter().position(|w| w.peer_id == first).expect("runs on one of the workers");
    workers[victim].kill();
    let mut record = Value::Null;
    wait_until(Duration::from_secs(60), "the task to complete elsewhere", || {
        record = gw.get(&format!("/v1/tasks/{id}")).unwrap();
        record["state"] == "completed"
    });
    assert_ne!(record["worker"], first.as_str(), "{record}");
    assert!(record["attempts"].as_u64().unwrap() >= 2, "{record}");
    assert!(record["fuel_used"].as_u64().unwrap() > 400_000_000, "{record}");
}
