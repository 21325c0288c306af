//! Multi-process tests of task execution: placement, retries, failures, nothing lost.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{NodeProc, Spec, block_on, scratch, task_cluster, wait_until};
use p2p_network::cli::client::ApiClient;
use serde_json::{Value, json};

/// Submits every body with `wait=true`, at most `concurrency` at a time, through `api`;
/// returns the final records in submission order (an error string where the API refused).
fn submit_all(api: &ApiClient, bodies: Vec<Value>, concurrency: usize) -> Vec<Result<Value, String>> {
    block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut handles = Vec::new();
        for body in bodies {
            let api = api.clone();
            let permit = sem.clone().acquire_owned().await.unwrap();
            handles.push(tokio::spawn(async move {
                let r = api
                    .call(hyper::Method::POST, "/v1/tasks?wait=true", Some(body), Duration::from_secs(120))
                    .await
                    .map_err(|e| e.to_string());
                drop(permit);
                r
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
}

fn executed(node: &NodeProc, ty: &str) -> f64 {
    node.metric_sum(&format!("p2p_tasks_executed_total{{type=\"{ty}\""))
}

#[test]
fn a_thousand_tasks_complete_each_exactly_once() {
    let dir = scratch("thousand");
    let (gw, workers) = task_cluster(dir.path(), (1..=3).map(|i| Spec::new(&format!("w{i}"), "worker")).collect());
    let started = Instant::now();
    let bodies = (0..1000).map(|i| json!({"type": "echo", "payload": format!("payload-{i}")})).collect();
    let results = submit_all(&gw.api, bodies, 64);
    eprintln!("1000 echo tasks through one gateway in {:?}", started.elapsed());

    let mut ids = HashSet::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        let rec = r.as_ref().expect("accepted");
        assert_eq!(rec["state"], "completed", "{rec}");
        assert_eq!(rec["result"], format!("payload-{i}"));
        assert!(ids.insert(rec["id"].as_str().unwrap().to_string()), "duplicate id");
        *per_worker.entry(rec["worker"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 3, "load spread over all workers: {per_worker:?}");
    // Each task ran exactly once: executions on the workers add up to 1000, not more.
    let total: f64 = workers.iter().map(|w| executed(w, "echo")).sum();
    assert_eq!(total, 1000.0);
    assert_eq!(gw.metric_sum("p2p_tasks_completed_total{type=\"echo\"}"), 1000.0);
    assert_eq!(gw.metric_sum("p2p_tasks_retried_total"), 0.0);
}

#[test]
fn killing_a_worker_loses_no_sleep_task() {
    let dir = scratch("kill9");
    let (gw, mut workers) = task_cluster(dir.path(), (1..=3).map(|i| Spec::new(&format!("w{i}"), "worker")).collect());
    let bodies: Vec<Value> =
        (0..200).map(|i| json!({"type": "sleep", "payload": format!("{}", 100 + (i * 37) % 401)})).collect();
    let victim_id = workers[0].peer_id.clone();
    let started = Instant::now();
    let api = gw.api.clone();
    let runner = std::thread::spawn(move || submit_all(&api, bodies, 200));
    // Let the first tasks land everywhere, then kill a worker holding some.
    wait_until(Duration::from_secs(10), "the victim to be executing tasks", || {
        workers[0].get("/v1/status").is_ok_and(|v| v["tasks"]["executing"].as_u64().unwrap_or(0) > 0)
    });
    workers[0].kill();
    let results = runner.join().unwrap();
    let took = started.elapsed();
    eprintln!("200 sleep tasks with a worker killed -9 midway: {took:?}");
    assert!(took < Duration::from_secs(60), "bound: all 200 final within 60 s, took {took:?}");

    let mut retried_off_victim = 0;
    for r in &results {
        let rec = r.as_ref().expect("accepted");
        assert_eq!(rec["state"], "completed", "{rec}");
        let history = rec["attempt_history"].as_array().unwrap();
        if history.iter().any(|a| a["worker"] == victim_id.as_str() && a["outcome"] != "ok") {
            retried_off_victim += 1;
            assert_ne!(rec["worker"], victim_id.as_str(), "completed on a live worker");
        }
    }
    assert!(retried_off_victim > 0, "the killed worker held tasks that were retried");
    assert_eq!(gw.metric_sum("p2p_tasks_completed_total{type=\"sleep\"}"), 200.0, "none completed twice");
    workers.remove(0);
}

#[test]
fn an_always_failing_task_gets_exactly_max_attempts_and_others_are_unaffected() {
    let dir = scratch("fail");
    let (gw, _workers) = task_cluster(dir.path(), (1..=3).map(|i| Spec::new(&format!("w{i}"), "worker")).collect());
    let mut bodies = vec![json!({"type": "fail", "payload": "boom", "max_attempts": 3})];
    bodies.extend((0..20).map(|i| json!({"type": "echo", "payload": format!("ok-{i}")})));
    let results = submit_all(&gw.api, bodies, 21);
    let failed = results[0].as_ref().unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["attempts"], 3);
    let history = failed["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    let error = failed["error"].as_str().unwrap();
    for a in 1..=3 {
        assert!(error.contains(&format!("attempt {a} on")), "every attempt's reason: {error}");
    }
    assert_eq!(error.matches("boom").count(), 3, "{error}");
    for r in &results[1..] {
        assert_eq!(r.as_ref().unwrap()["state"], "completed");
    }
    // The CLI reports the failure with a non-zero exit code.
    let (code, _, err) = gw.cli(&["task", "fail", "again"], None);
    assert_eq!(code, 1);
    assert!(err.contains("failed after 3 attempt(s)"), "{err}");
}

#[test]
fn capabilities_route_tasks_and_storage_survives_its_first_holder() {
    let dir = scratch("caps");
    let (gw, mut workers) = task_cluster(
        dir.path(),
        vec![
            Spec::new("compute-only", "worker").caps(&["compute"]),
            Spec::new("storage-a", "worker").caps(&["storage"]),
            Spec::new("storage-b", "worker").caps(&["storage"]),
            Spec::new("storage-c", "worker").caps(&["storage"]),
        ],
    );
    let compute_id = workers[0].peer_id.clone();
    let results =
        submit_all(&gw.api, (0..12).map(|i| json!({"type": "compute", "payload": format!("c{i}")})).collect(), 12);
    for r in &results {
        let rec = r.as_ref().unwrap();
        assert_eq!(rec["state"], "completed", "{rec}");
        assert_eq!(rec["worker"], compute_id.as_str(), "compute runs only on the compute worker");
        let proof: Value = serde_json::from_str(rec["result"].as_str().unwrap()).unwrap();
        assert!(proof["hash"].as_str().unwrap().starts_with("00"), "difficulty 8 means a leading zero byte");
    }
    for w in &workers[1..] {
        assert_eq!(executed(w, "compute"), 0.0, "{} never received a compute task", w.spec.name);
    }

    // Put through the bootstrap gateway, read through a worker's own API (another gateway).
    let put = submit_all(&gw.api, vec![json!({"type": "storage", "payload": "put colour ultramarine"})], 1);
    let put = put[0].as_ref().unwrap();
    assert_eq!(put["state"], "completed", "{put}");
    let holder = put["worker"].as_str().unwrap().to_string();
    let reader = workers.iter().position(|w| w.peer_id != holder && w.peer_id != compute_id).unwrap();
    let (code, out, err) = workers[reader].cli(&["task", "storage", "get", "colour"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("result: ultramarine"), "{out}");

    // Kill the worker that stored it first: the value lives on in the DHT's replicas.
    let idx = workers.iter().position(|w| w.peer_id == holder).unwrap();
    workers[idx].kill();
    let reader = workers.iter().position(|w| w.peer_id != holder && w.peer_id != compute_id).unwrap();
    let got = submit_all(&workers[reader].api, vec![json!({"type": "storage", "payload": "get colour"})], 1);
    let got = got[0].as_ref().unwrap();
    assert_eq!(got["state"], "completed", "{got}");
    assert_eq!(got["result"], "ultramarine");

    // A type nobody can run is refused at once, naming the capability.
    let refused = gw.call("POST", "/v1/tasks", Some(json!({"type": "compute", "payload": "x"})));
    assert!(refused.is_ok(), "compute still has a worker");
    workers[0].kill();
    wait_until(Duration::from_secs(10), "the compute worker to be gone at the gateway", || {
        gw.get("/v1/capabilities").is_ok_and(|v| v["cluster"]["compute"]["alive_workers"] == 0)
    });
    let err = gw.call("POST", "/v1/tasks", Some(json!({"type": "compute", "payload": "x"}))).unwrap_err();
    assert!(err.contains("capability \"compute\"") && err.contains("alive workers"), "{err}");
}

#[test]
fn a_paused_worker_is_routed_around_and_its_late_answers_are_ignored() {
    let dir = scratch("sigstop");
    let (gw, workers) = task_cluster(dir.path(), (1..=3).map(|i| Spec::new(&format!("w{i}"), "worker")).collect());
    let victim = &workers[1];
    let bodies: Vec<Value> =
        (0..30).map(|_| json!({"type": "sleep", "payload": "400", "timeout_ms": 1500, "max_attempts": 5})).collect();
    let api = gw.api.clone();
    let runner = std::thread::spawn(move || submit_all(&api, bodies, 30));
    wait_until(Duration::from_secs(10), "the victim to hold tasks", || {
        victim.get("/v1/status").is_ok_and(|v| v["tasks"]["executing"].as_u64().unwrap_or(0) > 0)
    });
    victim.signal("STOP");
    let results = runner.join().unwrap();
    let mut moved = 0;
    for r in &results {
        let rec = r.as_ref().unwrap();
        assert_eq!(rec["state"], "completed", "{rec}");
        assert_ne!(rec["worker"], victim.peer_id.as_str());
        if rec["attempts"].as_u64().unwrap() > 1 {
            moved += 1;
        }
    }
    assert!(moved > 0, "tasks held by the paused worker were retried elsewhere");
    let completed_before = gw.metric_sum("p2p_tasks_completed_total{type=\"sleep\"}");
    assert_eq!(completed_before, 30.0);

    victim.signal("CONT");
    // The resumed worker finishes its stale attempts and answers; the gateway ignores them.
    wait_until(Duration::from_secs(10), "stale answers to arrive and be dropped", || {
        gw.metric_sum("p2p_messages_dropped_total{reason=\"stale_task_result\"}") >= 1.0
    });
    assert_eq!(gw.metric_sum("p2p_tasks_completed_total{type=\"sleep\"}"), 30.0, "nothing completed twice");
    for r in &results {
        let id = r.as_ref().unwrap()["id"].as_str().unwrap();
        let now = gw.get(&format!("/v1/tasks/{id}")).unwrap();
        assert_eq!(now["worker"], r.as_ref().unwrap()["worker"], "final record unchanged");
    }
}

#[test]
fn the_promised_pod_command_works_and_status_and_cancel_are_there() {
    let dir = scratch("cli");
    let (gw, workers) = task_cluster(dir.path(), vec![Spec::new("w1", "worker")]);
    let w = &workers[0];
    let (code, out, err) = w.cli(&[], Some("task compute test_payload\n"));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("completed") && out.contains("\"nonce\""), "{out}");

    let (code, id, err) = gw.cli(&["submit", "sleep", "5000"], None);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let (code, out, _) = gw.cli(&["task-status", id], None);
    assert_eq!(code, 0);
    assert!(out.contains("running") || out.contains("pending"), "{out}");
    let (code, out, _) = gw.cli(&["cancel", id], None);
    assert_eq!(code, 0);
    assert!(out.contains("cancelled"), "{out}");
    let (code, _, err) = gw.cli(&["cancel", id], None);
    assert_eq!(code, 1);
    assert!(err.contains("already cancelled"), "{err}");
    let (code, _, err) = gw.cli(&["task", "teleport", "x"], None);
    assert_eq!(code, 1);
    assert!(err.contains("unknown task type"), "{err}");
}
