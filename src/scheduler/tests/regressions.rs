//! Bugs found and fixed, each pinned by the scenario that showed it.

use super::*;

#[tokio::test(start_paused = true)]
async fn busy_worker_is_offered_work_again_once_it_may_be_free() {
    let mut gw = gateway();
    let workers = [worker(2, &[])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(3), ..echo() }, &workers).unwrap();
    let (w, request) = sent_one(&mut gw);
    // Busy with another gateway's work; this gateway has nothing else in flight to it.
    answer(&mut gw, w, &request, err(TaskError::Busy), &workers);
    run_for(&mut gw, ms(3_000), &workers).await;
    let again = sent(&mut gw);
    assert!(
        again.iter().any(|(p, r)| *p == w && r.task_id == id),
        "never offered to the (only, idle) worker again: {:#?}",
        gw.get(&id)
    );
    assert_ne!(state(&gw, &id), TaskState::Failed);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn queue_depth_gauge_follows_cancel_and_queue_expiry() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    gw.submit(TaskSpec { timeout_ms: Some(60_000), ..echo() }, &workers).unwrap();
    let q = gw.submit(echo(), &workers).unwrap();
    assert_eq!(gw.metrics.queue_depth.get(), 1);
    gw.cancel(&q).unwrap();
    assert_eq!(gw.metrics.queue_depth.get(), gw.queued() as i64, "after cancel");

    gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(1), ..echo() }, &workers).unwrap();
    assert_eq!(gw.metrics.queue_depth.get(), 1);
    run_for(&mut gw, ms(1_000), &workers).await;
    assert_eq!(gw.queued(), 0);
    assert_eq!(gw.metrics.queue_depth.get(), 0, "after the queue deadline failed the task");
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn failure_summary_counts_the_final_non_retryable_attempt() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
    sent_one(&mut gw);
    run_for(&mut gw, ms(1_050), &workers).await;
    let (p2, r2) = sent_one(&mut gw);
    answer(&mut gw, p2, &r2, err(TaskError::BadPayload("no".into())), &workers);
    let error = assert_final(&gw, &id, TaskState::Failed).error.unwrap();
    assert!(error.starts_with("failed after 2 attempt(s)"), "{error}");
    check_invariants(&gw);
}
