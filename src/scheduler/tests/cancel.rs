//! Cancelling: queued, running and backing-off tasks stop for good; final and unknown ones are
//! refused.

use super::*;

#[tokio::test(start_paused = true)]
async fn cancel_a_queued_task() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let a = gw.submit(echo(), &workers).unwrap();
    let (w, ra) = sent_one(&mut gw);
    let b = gw.submit(echo(), &workers).unwrap();
    let record = gw.cancel(&b).unwrap();
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(record.error.as_deref(), Some("cancelled by user"));
    assert_eq!(gw.queued(), 0);
    assert_eq!(count(&gw.metrics.tasks_cancelled, "echo"), 1);
    check_invariants(&gw);

    answer(&mut gw, w, &ra, ok("a"), &workers);
    assert_final(&gw, &a, TaskState::Completed);
    assert!(sent(&mut gw).is_empty(), "a cancelled task is never dispatched");
    assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
    assert_final(&gw, &b, TaskState::Cancelled);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn cancel_a_running_task_and_ignore_its_answer() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let id = gw.submit(echo(), &workers).unwrap();
    let (w, request) = sent_one(&mut gw);
    let record = gw.cancel(&id).unwrap();
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(record.attempt_history[0].outcome, "cancelled");
    assert_eq!((gw.in_flight_to(&w), gw.running()), (0, 0));
    assert!(!gw.has_timers(), "the attempt deadline is disarmed");
    check_invariants(&gw);

    answer(&mut gw, w, &request, ok("too late"), &workers);
    let record = assert_final(&gw, &id, TaskState::Cancelled);
    assert_eq!(record.result, None);
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 0);
    assert_eq!(count(&gw.metrics.tasks_cancelled, "echo"), 1);
    assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 1);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn cancel_during_retry_backoff_stops_the_retry() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let id = gw.submit(echo(), &workers).unwrap();
    let (w, request) = sent_one(&mut gw);
    answer(&mut gw, w, &request, failed("oops"), &workers);
    assert!(gw.entries[&id].retry_timer.is_some());
    assert_eq!(gw.cancel(&id).unwrap().state, TaskState::Cancelled);
    assert!(!gw.has_timers());
    assert!(run_for(&mut gw, Duration::from_secs(5), &workers).await.is_empty());
    assert!(sent(&mut gw).is_empty());
    assert_final(&gw, &id, TaskState::Cancelled);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn cancel_a_final_or_unknown_task_is_refused() {
    let mut gw = gateway();
    let workers = [worker(3, &[])];
    let done = gw.submit(echo(), &workers).unwrap();
    let broken = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
    let cancelled = gw.submit(echo(), &workers).unwrap();
    let effects = sent(&mut gw);
    answer(&mut gw, effects[0].0, &effects[0].1, ok("done"), &workers);
    answer(&mut gw, effects[1].0, &effects[1].1, failed("no"), &workers);
    gw.cancel(&cancelled).unwrap();

    for (id, state) in [(&done, "completed"), (&broken, "failed"), (&cancelled, "cancelled")] {
        let e = gw.cancel(id).unwrap_err();
        assert_eq!(e, CancelError::AlreadyFinal(id.clone(), state));
        assert_eq!(e.to_string(), format!("task {id} is already {state}"));
    }
    let e = gw.cancel("nope").unwrap_err();
    assert_eq!(e, CancelError::NotFound("nope".into()));
    assert_eq!(e.to_string(), "no task with id nope");
    assert_final(&gw, &done, TaskState::Completed);
    assert_final(&gw, &broken, TaskState::Failed);
    let m = &gw.metrics;
    assert_eq!((total(&m.tasks_completed), total(&m.tasks_failed), total(&m.tasks_cancelled)), (1, 1, 1));
    check_invariants(&gw);
}
