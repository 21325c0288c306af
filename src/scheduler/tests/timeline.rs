//! The task's timeline and trace id: what happened when, attempt by attempt, for a reader
//! without a tracing backend.

use super::*;
use crate::scheduler::{MAX_TIMELINE, TimelineKind};
use crate::telemetry::Remote;

fn events(record: &TaskRecord) -> Vec<(u32, TimelineKind)> {
    record.timeline.iter().map(|e| (e.attempt, e.event)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_task_lost_on_one_worker_and_completed_on_another_tells_its_story() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { max_attempts: Some(3), ..echo() }, &workers).unwrap();
    let (p1, _) = sent_one(&mut gw);
    gw.on_worker_lost(p1, "is dead", &workers);
    run_for(&mut gw, ms(100), &workers).await;
    let (p2, r2) = sent_one(&mut gw);
    assert_ne!(p1, p2);
    let response = TaskResponse {
        v: WIRE_VERSION,
        task_id: id.clone(),
        attempt: 2,
        worker: p2.to_string(),
        outcome: ok("hello"),
        started_ms: Some(1_000),
        fuel_used: None,
    };
    gw.on_answer(p2, &id, r2.attempt, Ok(response), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    use TimelineKind::*;
    assert_eq!(
        events(&record),
        vec![
            (0, Queued),
            (1, Dispatched),
            (1, AttemptFailed),
            (1, Queued),
            (2, Dispatched),
            (2, Started),
            (2, Answered),
            (2, Completed)
        ]
    );
    let t = &record.timeline;
    assert_eq!(t[1].worker.as_deref(), Some(p1.to_string().as_str()));
    assert_eq!(t[4].worker.as_deref(), Some(p2.to_string().as_str()));
    assert!(t[2].detail.as_deref().unwrap().contains("is dead"), "{:?}", t[2]);
    // `started` is the worker's clock, as it said; the gateway's events are in order.
    assert_eq!(t[5].at_ms, 1_000);
    assert!(t.windows(2).filter(|w| w[1].event != Started && w[0].event != Started).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(record.trace_id.len(), 32);
    assert!(record.trace_id.bytes().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test(start_paused = true)]
async fn failures_busy_refusals_and_final_errors_are_on_the_timeline() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { max_attempts: Some(1), ..spec("fail", "boom") }, &workers).unwrap();
    let (p1, r1) = sent_one(&mut gw);
    answer(&mut gw, p1, &r1, err(TaskError::Busy), &workers);
    let (p2, r2) = sent_one(&mut gw);
    answer(&mut gw, p2, &r2, failed("boom"), &workers);
    let record = assert_final(&gw, &id, TaskState::Failed);
    let kinds: Vec<TimelineKind> = record.timeline.iter().map(|e| e.event).collect();
    use TimelineKind::*;
    assert_eq!(kinds, vec![Queued, Dispatched, Answered, Busy, Queued, Dispatched, Answered, AttemptFailed, Failed]);
    assert!(record.timeline[7].detail.as_deref().unwrap().contains("boom"));
    assert!(record.timeline[8].detail.as_deref().unwrap().starts_with("failed after 1 attempt(s)"));
}

#[tokio::test(start_paused = true)]
async fn the_submitters_trace_id_is_kept_and_a_missing_one_is_made() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let trace = Remote::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None);
    let id = gw.submit(TaskSpec { trace, ..echo() }, &workers).unwrap();
    assert_eq!(gw.get(&id).unwrap().trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let (_, request) = sent_one(&mut gw);
    // Without an exporter nothing travels with the request.
    assert_eq!(request.trace, None);
    let a = gw.submit(echo(), &workers).unwrap();
    let b = gw.submit(echo(), &workers).unwrap();
    assert_ne!(gw.get(&a).unwrap().trace_id, gw.get(&b).unwrap().trace_id);
}

#[tokio::test(start_paused = true)]
async fn the_timeline_is_bounded_and_keeps_the_first_and_latest_events() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let id = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
    // A worker that stays busy: every refusal adds events, none costs an attempt.
    for _ in 0..MAX_TIMELINE {
        let (p, r) = sent_one(&mut gw);
        answer(&mut gw, p, &r, err(TaskError::Busy), &workers);
        run_for(&mut gw, ms(2_100), &workers).await;
    }
    let record = gw.get(&id).unwrap();
    assert_eq!(record.timeline.len(), MAX_TIMELINE);
    assert_eq!(record.timeline[0].event, TimelineKind::Queued);
    assert_eq!(record.timeline[0].attempt, 0);
    assert_eq!(record.timeline.last().unwrap().attempt, record.attempts);
}

#[test]
fn records_stored_before_timelines_still_read() {
    // A record as an earlier version stored it: no trace id, no timeline.
    let old = serde_json::json!({
        "id": "t", "type": "echo", "payload": "p", "state": "completed", "attempts": 1,
        "worker": null, "result": "p", "error": null, "submitted_at": "2026-11-22T00:49:29.534Z",
        "finished_at": null, "attempt_history": []
    });
    let record: TaskRecord = serde_json::from_value(old).unwrap();
    assert!(record.trace_id.is_empty() && record.timeline.is_empty());
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &record).unwrap();
    let back: TaskRecord = cbor4ii::serde::from_slice(&bytes).unwrap();
    assert_eq!(back, record);
}
