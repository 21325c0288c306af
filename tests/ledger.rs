//! Multi-process tests of the credit ledger: verified work paid across a 5-node cluster while
//! a worker is killed and restarted, every node converging on one ledger (one digest) with no
//! credit created; every node killed and restarted keeping its ledger without fetching it
//! again; a late joiner catching up; an equivocating node frozen everywhere; `enforce`
//! refusing what a node cannot pay for.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{NodeProc, Spec, free_port, scratch, wait_schedulable, wait_until};
use serde_json::{Value, json};

const INITIAL: i128 = 1_000_000;

fn echo_module() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wasm/echo.wasm")).expect("the example is committed")
}

fn worker(name: &str, boot: &str) -> Spec {
    Spec::new(name, "worker").caps(&["compute", "wasm"]).port(free_port()).bootstrap(&[boot.to_string()])
}

fn ledger(node: &NodeProc) -> Value {
    node.get("/v1/ledger").expect("the ledger answers")
}

/// Waits until every node has sealed what it owes and all report the same digest; returns
/// it and how long it took.
fn converged(nodes: &[&NodeProc], limit: Duration) -> (String, Duration) {
    let mut digest = String::new();
    let took = wait_until(limit, "every node to seal its payments and report one ledger digest", || {
        let views: Vec<Value> = nodes.iter().map(|n| n.get("/v1/ledger").unwrap_or(Value::Null)).collect();
        let digests: BTreeSet<String> = views.iter().map(|v| v["digest"].to_string()).collect();
        digest = digests.iter().next().cloned().unwrap_or_default();
        digests.len() == 1 && views.iter().all(|v| v["payments_waiting"] == 0)
    });
    (digest, took)
}

/// Credits are moved, never created: the balances sum to the initial credits of every account.
fn assert_conserved(node: &NodeProc) -> Vec<Value> {
    let l = ledger(node);
    let accounts = l["accounts"].as_array().unwrap().clone();
    let total: i128 = accounts.iter().map(|a| a["balance"].as_i64().unwrap() as i128).sum();
    assert_eq!(total, INITIAL * accounts.len() as i128, "credits conserved: {l}");
    accounts
}

fn submit_batch(gw: &NodeProc, tasks: Vec<Value>) -> Vec<String> {
    let r = gw.call("POST", "/v1/tasks/batch", Some(json!({ "tasks": tasks }))).expect("batch accepted");
    r["ids"].as_array().expect("ids").iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn wait_final(gw: &NodeProc, ids: &[String], limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    ids.iter()
        .map(|id| {
            loop {
                let r = gw.get(&format!("/v1/tasks/{id}")).unwrap_or(Value::Null);
                if matches!(r["state"].as_str(), Some("completed" | "failed" | "cancelled")) {
                    break r;
                }
                assert!(Instant::now() < deadline, "task {id} not final within {limit:?}: {r}");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect()
}

#[test]
fn verified_work_is_paid_and_every_node_agrees_through_crashes_and_late_joins() {
    let dir = scratch("ledger");
    let boot = NodeProc::start(dir.path(), Spec::new("bootstrap", "bootstrap").port(free_port()));
    let addr = boot.p2p_addr();
    let mut workers: Vec<NodeProc> =
        (1..=4).map(|i| NodeProc::start(dir.path(), worker(&format!("w{i}"), &addr))).collect();
    wait_schedulable(&boot, &workers);
    wait_schedulable(&workers[0], &workers[1..]);
    let module = common::block_on(boot.api.post_bytes("/v1/modules", echo_module())).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    common::block_on(workers[0].api.post_bytes("/v1/modules", echo_module())).unwrap();

    // 1,000 mixed tasks from two gateways (the bootstrap, and worker w1), in batches; w4 is
    // killed after the first batches and restarted before the last.
    let mut ids: Vec<(usize, String)> = Vec::new();
    for round in 0..10 {
        let tasks: Vec<Value> = (0..100)
            .map(|i| match i % 5 {
                0 | 1 => json!({"type": "echo", "payload": format!("r{round}-{i}")}),
                2 | 3 => json!({"type": "compute", "payload": format!("c{round}-{i}")}),
                _ => json!({"type": "wasm", "module": module, "payload": format!("w{round}-{i}"),
                            "replicas": 2, "quorum": 2, "timeout_ms": 20000}),
            })
            .collect();
        let gw = if round % 2 == 0 { &boot } else { &workers[0] };
        ids.extend(submit_batch(gw, tasks).into_iter().map(|id| (round % 2, id)));
        if round == 2 {
            workers[3].kill();
        }
        if round == 6 {
            workers[3].restart();
        }
    }
    let mut records: Vec<(usize, Value)> = Vec::new();
    for g in 0..2 {
        let gw = if g == 0 { &boot } else { &workers[0] };
        let mine: Vec<String> = ids.iter().filter(|(i, _)| *i == g).map(|(_, id)| id.clone()).collect();
        records.extend(wait_final(gw, &mine, Duration::from_secs(120)).into_iter().map(|r| (g, r)));
    }
    assert_eq!(records.len(), 1000);
    for (_, r) in &records {
        assert_eq!(r["state"], "completed", "{r}");
        let payment = &r["payment"];
        assert!(payment["verified_by"].is_string(), "every completed task here is verifiable: {r}");
        if r["type"] == "wasm" {
            let agreeing = r["replica_results"].as_array().unwrap().iter().filter(|x| x["agreed"] == true).count();
            assert!(agreeing >= 2, "{r}");
        }
    }
    let paid: i128 = records
        .iter()
        .flat_map(|(_, r)| r["payment"]["paid"].as_array().cloned().unwrap_or_default())
        .map(|p| p["credits"].as_i64().unwrap() as i128)
        .sum();
    assert!(paid > 0);

    // Every node converges on one ledger within 10 s of the last task, and no credit was made.
    let mut nodes: Vec<&NodeProc> = vec![&boot];
    nodes.extend(workers.iter());
    let (digest, took) = converged(&nodes, Duration::from_secs(10));
    eprintln!("ledger digest {digest} on every node {took:?} after the last task");
    let accounts = assert_conserved(&boot);
    // Each account moved exactly what the task records say: gateways paid, workers earned.
    let mut expected: std::collections::BTreeMap<String, i128> = std::collections::BTreeMap::new();
    for (g, r) in &records {
        let payer = if *g == 0 { &boot.peer_id } else { &workers[0].peer_id };
        for p in r["payment"]["paid"].as_array().cloned().unwrap_or_default() {
            let credits = p["credits"].as_i64().unwrap() as i128;
            *expected.entry(payer.clone()).or_default() -= credits;
            *expected.entry(p["worker"].as_str().unwrap().to_string()).or_default() += credits;
        }
    }
    for a in &accounts {
        let moved = a["balance"].as_i64().unwrap() as i128 - INITIAL;
        let peer = a["peer"].as_str().unwrap();
        assert_eq!(moved, expected.get(peer).copied().unwrap_or(0), "{peer}: balance against the task records");
    }
    assert_eq!(
        expected.values().filter(|v| **v != 0).count(),
        accounts.iter().filter(|a| a["balance"] != INITIAL as i64).count()
    );

    // The CLI shows the same.
    let (code, out, err) = boot.cli(&["balance"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&boot.peer_id) && out.contains("balance"), "{out}");
    let (code, out, err) = boot.cli(&["ledger"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(digest.trim_matches('"')), "{out}");

    // Every node killed at once and restarted: the same ledger, from each node's own store.
    drop(nodes);
    let mut boot = boot;
    boot.kill();
    for w in &mut workers {
        w.kill();
    }
    boot.restart();
    for w in &mut workers {
        w.restart();
    }
    let mut nodes: Vec<&NodeProc> = vec![&boot];
    nodes.extend(workers.iter());
    let (again, _) = converged(&nodes, Duration::from_secs(20));
    assert_eq!(again, digest, "the ledger after the restart is the ledger before it");
    for n in &nodes {
        let fetched = n.metric_sum("p2p_ledger_blocks_received_total{via=\"sync\",outcome=\"accepted\"}");
        assert_eq!(fetched, 0.0, "{}: nothing it had stored is fetched again", n.spec.name);
        let replayed = n.metric_sum("p2p_ledger_blocks_received_total{via=\"store\",outcome=\"accepted\"}");
        assert!(replayed > 0.0, "{}: its ledger came from its own store", n.spec.name);
    }

    // A node started after all of it catches up.
    let late = NodeProc::start(dir.path(), worker("late", &boot.p2p_addr()));
    let mut all = nodes.clone();
    all.push(&late);
    let (caught_up, took) = converged(&all, Duration::from_secs(20));
    assert_eq!(caught_up, digest);
    eprintln!("late joiner caught up in {took:?}");
    assert_conserved(&late);
}

#[test]
fn an_equivocating_node_is_frozen_on_every_node() {
    let dir = scratch("ledger-fork");
    let boot = NodeProc::start(dir.path(), Spec::new("bootstrap", "bootstrap").port(free_port()));
    let addr = boot.p2p_addr();
    let cheat = NodeProc::start(
        dir.path(),
        // Not a worker itself: every task it takes runs on (and pays) an honest worker.
        Spec::new("cheat", "bootstrap").bootstrap(std::slice::from_ref(&addr)).env("P2P_LEDGER__TEST_EQUIVOCATE", true),
    );
    let honest: Vec<NodeProc> = (1..=2).map(|i| NodeProc::start(dir.path(), worker(&format!("h{i}"), &addr))).collect();
    wait_schedulable(&cheat, &honest);
    // The cheat pays for tasks it submits: its first sealed block is forked.
    let ids = submit_batch(&cheat, (0..20).map(|i| json!({"type": "echo", "payload": format!("x{i}")})).collect());
    wait_final(&cheat, &ids, Duration::from_secs(30));
    let mut nodes: Vec<&NodeProc> = vec![&boot, &cheat];
    nodes.extend(honest.iter());
    wait_until(Duration::from_secs(15), "every node to show the cheat frozen", || {
        nodes
            .iter()
            .all(|n| n.get(&format!("/v1/ledger/accounts/{}", cheat.peer_id)).is_ok_and(|a| a["frozen"] == true))
    });
    let (digest, _) = converged(&nodes, Duration::from_secs(10));
    for n in &nodes {
        assert!(n.metric_sum("p2p_ledger_equivocations_total") >= 1.0, "{}", n.spec.name);
        assert_conserved(n);
    }
    let (code, out, _) = boot.cli(&["balance", &cheat.peer_id], None);
    assert_eq!(code, 0);
    assert!(out.contains("FROZEN"), "{out}");
    eprintln!("frozen everywhere, digest {digest}");
}

#[test]
fn enforce_refuses_a_task_the_gateway_cannot_pay_for() {
    let dir = scratch("ledger-enforce");
    let boot = NodeProc::start(
        dir.path(),
        Spec::new("bootstrap", "bootstrap")
            .env("P2P_LEDGER__ENFORCE", true)
            .env("P2P_LEDGER__INITIAL_CREDITS", 25)
            .env("P2P_LEDGER__PRICES__COMPUTE", 10),
    );
    let w = NodeProc::start(dir.path(), worker("w", &boot.p2p_addr()));
    wait_schedulable(&boot, std::slice::from_ref(&w));
    let done = |payload: &str| {
        boot.call("POST", "/v1/tasks?wait=true", Some(json!({"type": "compute", "payload": payload})))
            .expect("accepted")
    };
    assert_eq!(done("a")["state"], "completed");
    assert_eq!(done("b")["state"], "completed");
    // 25 - 2 x 10 leaves 5: a compute task (10) is refused with the balance and the price.
    let err = boot.call("POST", "/v1/tasks", Some(json!({"type": "compute", "payload": "c"}))).unwrap_err();
    assert!(err.contains("5 credits") && err.contains("up to 10"), "{err}");
    assert!(boot.metric_sum("p2p_tasks_rejected_total{reason=\"insufficient_credits\"}") >= 1.0);
}
