//! Busy answers: they cost no attempt, and the busy worker is skipped until it may have room.

use super::*;

#[tokio::test(start_paused = true)]
async fn busy_answer_costs_no_attempt_and_moves_to_another_worker() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
    let (first, r1) = sent_one(&mut gw);
    answer(&mut gw, first, &r1, err(TaskError::Busy), &workers);

    let (second, r2) = sent_one(&mut gw);
    assert_ne!(second, first, "the busy worker is not asked again while another has room");
    assert_eq!(r2.attempt, 2);
    assert_eq!(gw.entries[&id].failures, 0, "busy is not a failure");
    let record = gw.get(&id).unwrap();
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.attempt_history[0].outcome, "busy");
    assert_eq!(record.attempt_history[0].error, Some(TaskError::Busy.to_string()));
    assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 0);
    check_invariants(&gw);

    // With max_attempts 1 the task still has its one real attempt.
    answer(&mut gw, second, &r2, ok("done"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    assert_eq!((count(&gw.metrics.tasks_completed, "echo"), count(&gw.metrics.tasks_failed, "echo")), (1, 0));
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn busy_worker_is_skipped_until_it_answers_again() {
    let mut gw = gateway();
    let workers = [worker(2, &[])];
    let w = workers[0].id;
    let _x = gw.submit(echo(), &workers).unwrap();
    let (_, rx) = sent_one(&mut gw);
    let t = gw.submit(echo(), &workers).unwrap();
    let (_, rt) = sent_one(&mut gw);

    answer(&mut gw, w, &rt, err(TaskError::Busy), &workers);
    assert!(sent(&mut gw).is_empty(), "not re-sent straight back to the busy worker");
    assert_eq!((state(&gw, &t), gw.queued()), (TaskState::Pending, 1));
    check_invariants(&gw);

    // The worker finishing other work shows it has room again.
    answer(&mut gw, w, &rx, ok("x"), &workers);
    let (peer, again) = sent_one(&mut gw);
    assert_eq!((peer, again.task_id.as_str(), again.attempt), (w, t.as_str(), 2));
    answer(&mut gw, w, &again, ok("t"), &workers);
    assert_final(&gw, &t, TaskState::Completed);
    check_invariants(&gw);
}
