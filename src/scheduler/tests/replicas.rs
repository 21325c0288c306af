//! Verification by redundancy at the gateway: replicas on distinct workers, the quorum's
//! output, the minority recorded and penalised, more replicas on disagreement, no quorum.

use super::*;
use crate::wasm::{ModuleId, WasmCall};

fn wasm(replicas: u32, quorum: Option<u32>) -> TaskSpec {
    let call = WasmCall { module: ModuleId::of(b"m"), input: "in".into(), args: vec![], limits: Default::default() };
    TaskSpec { replicas: Some(replicas), quorum, ..spec("wasm", &call.encode()) }
}

fn wasm_workers(n: usize) -> Vec<WorkerView> {
    (0..n).map(|_| worker(4, &["wasm"])).collect()
}

/// `peer` answers with `output` and `fuel`.
fn says(gw: &mut Gateway, peer: PeerId, request: &TaskRequest, output: &str, fuel: u64, workers: &[WorkerView]) {
    let response = TaskResponse {
        v: WIRE_VERSION,
        task_id: request.task_id.clone(),
        attempt: request.attempt,
        worker: peer.to_string(),
        outcome: ok(output),
        started_ms: None,
        fuel_used: Some(fuel),
    };
    gw.on_answer(peer, &request.task_id, request.attempt, Ok(response), workers);
}

fn penalties(effects: Vec<Effect>) -> Vec<(PeerId, u32, f64)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Penalize { peer, strikes, score } => Some((peer, strikes, score)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_quorum_completes_the_task_and_the_minority_is_recorded_and_penalised() {
    let mut gw = gateway();
    let workers = wasm_workers(3);
    let id = gw.submit(wasm(3, Some(2)), &workers).unwrap();
    let dispatched = sent(&mut gw);
    assert_eq!(dispatched.len(), 3);
    let peers: std::collections::HashSet<PeerId> = dispatched.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers.len(), 3, "replicas run on distinct workers");
    assert_eq!(state(&gw, &id), TaskState::Running);
    check_invariants(&gw);

    // The dishonest worker answers first, then two honest ones.
    let (bad, r_bad) = dispatched[0].clone();
    says(&mut gw, bad, &r_bad, "42 corrupted", 1000, &workers);
    assert_eq!(state(&gw, &id), TaskState::Running);
    says(&mut gw, dispatched[1].0, &dispatched[1].1, "42", 1000, &workers);
    assert_eq!(state(&gw, &id), TaskState::Running);
    says(&mut gw, dispatched[2].0, &dispatched[2].1, "42", 1000, &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(record.result.as_deref(), Some("42"));
    assert_eq!(record.fuel_used, Some(1000));
    assert_eq!(record.replica_results.len(), 3);
    let minority: Vec<_> = record.replica_results.iter().filter(|r| r.agreed == Some(false)).collect();
    assert_eq!(minority.len(), 1, "{record:#?}");
    assert_eq!(minority[0].worker.as_deref(), Some(bad.to_string().as_str()));
    assert_eq!(gw.metrics.replicas_minority.get(), 1);
    assert_eq!(penalties(gw.take_effects()), vec![(bad, 1, -super::super::replicas::MINORITY_PENALTY)]);
    assert_eq!(count(&gw.metrics.tasks_completed, "wasm"), 1, "the task is counted once, not per replica");
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn a_late_minority_replica_is_judged_after_the_task_completed() {
    let mut gw = gateway();
    let workers = wasm_workers(3);
    let id = gw.submit(wasm(3, None), &workers).unwrap();
    let d = sent(&mut gw);
    says(&mut gw, d[0].0, &d[0].1, "ok", 5, &workers);
    says(&mut gw, d[1].0, &d[1].1, "ok", 5, &workers);
    assert_final(&gw, &id, TaskState::Completed);
    // Fuel is part of the vote: same output, different fuel disagrees.
    says(&mut gw, d[2].0, &d[2].1, "ok", 6, &workers);
    let record = gw.get(&id).unwrap();
    assert_eq!(record.replica_results.iter().filter(|r| r.agreed == Some(true)).count(), 2);
    assert_eq!(record.replica_results[2].agreed, Some(false));
    assert_eq!(penalties(gw.take_effects()).len(), 1);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn disagreement_runs_more_replicas_then_fails_with_every_replica_named() {
    let mut gw = gateway();
    let workers = wasm_workers(5);
    let id = gw.submit(wasm(2, Some(2)), &workers).unwrap();
    let d = sent(&mut gw);
    assert_eq!(d.len(), 2);
    says(&mut gw, d[0].0, &d[0].1, "a", 1, &workers);
    says(&mut gw, d[1].0, &d[1].1, "b", 1, &workers);
    // One more can settle it; it goes to a worker that has not run this task.
    let (p3, r3) = sent_one(&mut gw);
    assert!(r3.task_id.ends_with(".r3"));
    assert!(p3 != d[0].0 && p3 != d[1].0);
    says(&mut gw, p3, &r3, "c", 1, &workers);
    let (p4, r4) = sent_one(&mut gw);
    says(&mut gw, p4, &r4, "d", 1, &workers);
    // Four replicas in all (twice the two asked for), no two alike.
    let record = assert_final(&gw, &id, TaskState::Failed);
    assert!(sent(&mut gw).is_empty());
    let error = record.error.unwrap();
    assert!(error.contains("no 2 of 4 replicas agreed"), "{error}");
    for r in &record.replica_results {
        assert!(error.contains(r.worker.as_deref().unwrap()), "{error}");
        assert!(error.contains(r.output_sha256.as_deref().unwrap()), "{error}");
    }
    assert_eq!(gw.metrics.replicas_minority.get(), 0, "without a quorum nobody is known to be wrong");
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn a_lost_worker_retries_its_replica_on_a_worker_no_other_replica_used() {
    let mut gw = gateway();
    let workers = wasm_workers(4);
    let id = gw.submit(wasm(3, Some(2)), &workers).unwrap();
    let d = sent(&mut gw);
    says(&mut gw, d[0].0, &d[0].1, "x", 9, &workers);
    let lost = d[1].0;
    let alive: Vec<WorkerView> = workers.iter().filter(|w| w.id != lost).cloned().collect();
    gw.on_worker_lost(lost, "died", &alive);
    run_for(&mut gw, ms(1_000), &alive).await;
    let (p, r) = sent_one(&mut gw);
    assert_eq!(r.task_id, d[1].1.task_id);
    assert!(p != d[0].0 && p != d[2].0 && p != lost, "a fourth, distinct worker");
    says(&mut gw, p, &r, "x", 9, &alive);
    assert_eq!(assert_final(&gw, &id, TaskState::Completed).result.as_deref(), Some("x"));
    says(&mut gw, d[2].0, &d[2].1, "x", 9, &alive);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn a_deterministic_failure_agreed_by_a_quorum_fails_the_task() {
    let mut gw = gateway();
    let workers = wasm_workers(3);
    let id = gw.submit(wasm(3, Some(2)), &workers).unwrap();
    let d = sent(&mut gw);
    let trap = || err(TaskError::Deterministic("trapped: unreachable".into()));
    answer(&mut gw, d[0].0, &d[0].1, trap(), &workers);
    answer(&mut gw, d[1].0, &d[1].1, trap(), &workers);
    let record = assert_final(&gw, &id, TaskState::Failed);
    assert!(record.error.unwrap().contains("2 replicas failed alike: task failed: trapped: unreachable"));
    // The third replica still runs; its answer is judged when it comes.
    answer(&mut gw, d[2].0, &d[2].1, trap(), &workers);
    assert!(gw.get(&id).unwrap().replica_results.iter().all(|r| r.agreed == Some(true)));
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn replicas_wait_for_distinct_workers_without_holding_up_other_tasks() {
    let mut gw = gateway();
    let workers = wasm_workers(2);
    // Two workers, two replicas: each has its own.
    let id = gw.submit(wasm(2, Some(2)), &workers).unwrap();
    let d = sent(&mut gw);
    assert_eq!(d.len(), 2);
    // Disagreement: a third replica has no worker that did not run this task, so it waits...
    says(&mut gw, d[0].0, &d[0].1, "a", 1, &workers);
    says(&mut gw, d[1].0, &d[1].1, "b", 1, &workers);
    assert!(sent(&mut gw).is_empty());
    // ...while other tasks still run.
    let other = gw.submit(wasm(1, None), &workers).unwrap();
    let (p, r) = sent_one(&mut gw);
    says(&mut gw, p, &r, "fine", 1, &workers);
    assert_final(&gw, &other, TaskState::Completed);
    assert_eq!(state(&gw, &id), TaskState::Running);
    check_invariants(&gw);
}

#[test]
fn replicas_and_quorum_are_checked_at_submission() {
    let mut gw = gateway();
    let workers = wasm_workers(2);
    let e = gw.submit(wasm(3, Some(2)), &workers).unwrap_err();
    assert_eq!(e, SubmitError::NotEnoughWorkers { capability: "wasm".into(), replicas: 3, capable: 2 });
    let e = gw.submit(wasm(2, Some(3)), &workers).unwrap_err();
    assert!(matches!(e, SubmitError::Invalid { field: "quorum", .. }), "{e:?}");
    let e = gw.submit(wasm(0, None), &workers).unwrap_err();
    assert!(matches!(e, SubmitError::Invalid { field: "replicas", .. }), "{e:?}");
    let e = gw.submit(TaskSpec { replicas: Some(2), ..echo() }, &[worker(1, &[]), worker(1, &[])]).unwrap_err();
    assert!(matches!(e, SubmitError::Invalid { field: "replicas", .. }), "{e:?}");
    assert_eq!(reason(&gw.metrics.tasks_rejected, "not_enough_workers"), 1);
    assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_replicas"), 3);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_replicated_task_cancels_its_replicas() {
    let mut gw = gateway();
    let workers = wasm_workers(3);
    let id = gw.submit(wasm(3, Some(2)), &workers).unwrap();
    let d = sent(&mut gw);
    gw.cancel(&id).unwrap();
    assert_final(&gw, &id, TaskState::Cancelled);
    for (_, r) in &d {
        assert_final(&gw, &r.task_id, TaskState::Cancelled);
    }
    check_invariants(&gw);
}
