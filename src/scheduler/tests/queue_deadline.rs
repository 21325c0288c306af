//! The queue deadline: a task no capable worker takes in time counts a failure per wait, and
//! the deadline is disarmed once the task is placed.

use super::*;

#[tokio::test(start_paused = true)]
async fn task_that_cannot_be_placed_in_time_counts_failures_then_fails() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let blocker = gw.submit(TaskSpec { timeout_ms: Some(60_000), ..echo() }, &workers).unwrap();
    let (w, rb) = sent_one(&mut gw);
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(2), ..echo() }, &workers).unwrap();
    assert_eq!(gw.queued(), 1);

    assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
    let fired = run_for(&mut gw, ms(1), &workers).await;
    assert!(matches!(&fired[..], [Timer::QueueDeadline { id: t, .. }] if *t == id), "{fired:?}");
    let record = gw.get(&id).unwrap();
    assert_eq!((record.state, record.attempts), (TaskState::Pending, 0));
    assert_eq!(gw.entries[&id].failures, 1);
    assert_eq!(gw.queued(), 1, "still waiting for a worker");
    assert_eq!(record.attempt_history.len(), 1);
    assert_eq!(record.attempt_history[0].outcome, "queued");
    check_invariants(&gw);

    assert_eq!(run_for(&mut gw, ms(1_000), &workers).await.len(), 1);
    let record = assert_final(&gw, &id, TaskState::Failed);
    let error = record.error.unwrap();
    assert!(error.starts_with("failed after 2 attempt(s)"), "{error}");
    assert!(error.contains("no capable worker was free within 1000 ms"), "{error}");
    assert_eq!(gw.queued(), 0);
    assert_eq!(count(&gw.metrics.tasks_failed, "echo"), 1);

    // The worker freeing up later does not resurrect it.
    answer(&mut gw, w, &rb, ok("done"), &workers);
    assert_final(&gw, &blocker, TaskState::Completed);
    assert!(sent(&mut gw).is_empty());
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn queue_deadline_is_disarmed_once_the_task_is_placed() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let _blocker = gw.submit(echo(), &workers).unwrap();
    let (w, rb) = sent_one(&mut gw);
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(1), ..echo() }, &workers).unwrap();
    run_for(&mut gw, ms(500), &workers).await;
    answer(&mut gw, w, &rb, ok("done"), &workers);
    let (_, request) = sent_one(&mut gw);
    assert_eq!(request.task_id, id);
    // Only the attempt deadline (at 500 + 1000 ms) can fire now, not the queue one at 1000 ms.
    assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
    assert_eq!(state(&gw, &id), TaskState::Running);
    let fired = run_for(&mut gw, ms(1), &workers).await;
    assert_eq!(fired, vec![Timer::AttemptDeadline { id: id.clone(), attempt: 1 }]);
    assert_final(&gw, &id, TaskState::Failed);
    check_invariants(&gw);
}
