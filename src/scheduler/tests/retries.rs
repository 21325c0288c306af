//! Failed attempts: retried elsewhere after backoff up to the task's attempts, unless the error
//! is one every worker would give; deadlines count as failures.

use super::*;

#[tokio::test(start_paused = true)]
async fn retryable_failure_is_retried_elsewhere_after_backoff_until_max_attempts() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { max_attempts: Some(3), ..spec("fail", "boom") }, &workers).unwrap();

    let (p1, r1) = sent_one(&mut gw);
    answer(&mut gw, p1, &r1, failed("boom 1"), &workers);
    assert!(sent(&mut gw).is_empty(), "a retry waits for its backoff");
    assert_eq!(state(&gw, &id), TaskState::Pending);
    assert!(gw.entries[&id].retry_timer.is_some());
    assert_eq!(count(&gw.metrics.tasks_retried, "fail"), 1);
    check_invariants(&gw);
    // The first backoff is 25..50 ms.
    assert!(run_for(&mut gw, ms(24), &workers).await.is_empty());
    assert!(sent(&mut gw).is_empty());
    assert_eq!(run_for(&mut gw, ms(26), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
    let (p2, r2) = sent_one(&mut gw);
    assert_ne!(p2, p1, "retried on a worker that has not failed it");
    assert_eq!((r2.task_id.as_str(), r2.attempt), (id.as_str(), 2));

    answer(&mut gw, p2, &r2, failed("boom 2"), &workers);
    // The second backoff is 50..100 ms.
    assert!(run_for(&mut gw, ms(49), &workers).await.is_empty());
    assert_eq!(run_for(&mut gw, ms(51), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
    let (p3, r3) = sent_one(&mut gw);
    assert!(p3 != p1 && p3 != p2, "the third attempt goes to the one worker not tried yet");
    assert_eq!(r3.attempt, 3);
    check_invariants(&gw);

    answer(&mut gw, p3, &r3, failed("boom 3"), &workers);
    let record = assert_final(&gw, &id, TaskState::Failed);
    let error = record.error.unwrap();
    assert!(error.starts_with("failed after 3 attempt(s)"), "{error}");
    for (n, peer) in [(1, p1), (2, p2), (3, p3)] {
        let expected = format!("attempt {n} on {peer}: task failed: boom {n}");
        assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
    }
    assert!(record.attempt_history.iter().all(|a| a.outcome == "error"));
    assert_eq!(record.attempts, 3);
    assert_eq!(count(&gw.metrics.tasks_retried, "fail"), 2);
    assert_eq!(count(&gw.metrics.tasks_failed, "fail"), 1);
    assert!(!gw.has_timers());
    assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
    assert!(sent(&mut gw).is_empty());
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_fail_at_once() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let errors = [TaskError::UnknownType("echo".into()), TaskError::BadPayload("no".into()), TaskError::Version(9)];
    for error in errors {
        let id = gw.submit(TaskSpec { max_attempts: Some(5), ..echo() }, &workers).unwrap();
        let (peer, request) = sent_one(&mut gw);
        answer(&mut gw, peer, &request, err(error.clone()), &workers);
        let record = assert_final(&gw, &id, TaskState::Failed);
        assert_eq!(record.attempts, 1);
        assert_eq!(record.attempt_history[0].outcome, "error");
        assert!(record.error.as_deref().unwrap().contains(&error.to_string()), "{record:?}");
        assert!(gw.entries[&id].retry_timer.is_none());
        assert!(sent(&mut gw).is_empty());
    }
    assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
    assert!(sent(&mut gw).is_empty());
    assert_eq!(count(&gw.metrics.tasks_failed, "echo"), 3);
    assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 0);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn other_worker_errors_are_retried() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let errors = [TaskError::MissingCapability("gpu".into()), TaskError::Timeout, TaskError::ShuttingDown];
    for error in errors {
        let id = gw.submit(TaskSpec { max_attempts: Some(2), ..echo() }, &workers).unwrap();
        let (p1, r1) = sent_one(&mut gw);
        answer(&mut gw, p1, &r1, err(error.clone()), &workers);
        assert_eq!(state(&gw, &id), TaskState::Pending, "{error:?} is retried");
        run_for(&mut gw, ms(50), &workers).await;
        let (p2, r2) = sent_one(&mut gw);
        assert_ne!(p2, p1);
        answer(&mut gw, p2, &r2, ok("fine"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
    }
    assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 3);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn attempt_deadline_fails_the_attempt_and_retries() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
    let (p1, _) = sent_one(&mut gw);

    assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
    assert_eq!(state(&gw, &id), TaskState::Running);
    let fired = run_for(&mut gw, ms(1), &workers).await;
    assert_eq!(fired, vec![Timer::AttemptDeadline { id: id.clone(), attempt: 1 }]);
    let record = gw.get(&id).unwrap();
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.attempt_history[0].outcome, "timeout");
    assert_eq!(record.attempt_history[0].error.as_deref(), Some("no answer within 1000 ms"));
    assert_eq!((gw.in_flight_to(&p1), gw.running()), (0, 0));
    check_invariants(&gw);

    assert_eq!(run_for(&mut gw, ms(50), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
    let (p2, r2) = sent_one(&mut gw);
    assert_ne!(p2, p1);
    assert_eq!(r2.attempt, 2);
    answer(&mut gw, p2, &r2, ok("in time"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    assert!(!gw.has_timers());
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn attempt_deadlines_exhaust_max_attempts() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(100), max_attempts: Some(2), ..echo() }, &workers).unwrap();
    let fired = run_for(&mut gw, Duration::from_secs(5), &workers).await;
    let deadlines = fired.iter().filter(|t| matches!(t, Timer::AttemptDeadline { .. })).count();
    assert_eq!(deadlines, 2, "{fired:?}");
    assert_eq!(sent(&mut gw).len(), 2);
    let record = assert_final(&gw, &id, TaskState::Failed);
    assert!(record.error.unwrap().contains("attempt 2 on"));
    check_invariants(&gw);
}
