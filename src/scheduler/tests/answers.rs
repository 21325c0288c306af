//! Which answers count: only the running attempt's worker can end it, with a response for that
//! very attempt and (for compute) a result that verifies; lost workers and network errors end
//! attempts at once.

use super::*;

#[tokio::test(start_paused = true)]
async fn late_answer_from_an_earlier_attempt_is_ignored() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
    let (p1, r1) = sent_one(&mut gw);
    run_for(&mut gw, ms(1_000), &workers).await;

    // Late, during the backoff: changes nothing, the retry still happens.
    answer(&mut gw, p1, &r1, ok("late"), &workers);
    assert_eq!(state(&gw, &id), TaskState::Pending);
    assert!(gw.entries[&id].retry_timer.is_some());
    assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 1);
    check_invariants(&gw);
    run_for(&mut gw, ms(50), &workers).await;
    let (p2, r2) = sent_one(&mut gw);
    assert_eq!(r2.attempt, 2);

    // Late, while attempt 2 runs: still ignored.
    answer(&mut gw, p1, &r1, ok("late again"), &workers);
    assert_eq!(state(&gw, &id), TaskState::Running);
    assert_eq!(gw.in_flight_to(&p2), 1);
    assert!(sent(&mut gw).is_empty());

    answer(&mut gw, p2, &r2, ok("fresh"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    // Neither the late nor a duplicate answer completes it again.
    answer(&mut gw, p1, &r1, ok("late, after the end"), &workers);
    answer(&mut gw, p2, &r2, ok("duplicate"), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(record.result.as_deref(), Some("fresh"));
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
    assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 4);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn answer_from_a_peer_not_given_the_task_is_ignored() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(echo(), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    let other = if peer == workers[0].id { workers[1].id } else { workers[0].id };

    answer(&mut gw, other, &request, ok("forged"), &workers);
    answer(&mut gw, PeerId::random(), &request, ok("forged"), &workers);
    answer(&mut gw, other, &request, failed("forged"), &workers);
    // The right peer, but an attempt it was never given.
    answer(&mut gw, peer, &TaskRequest { attempt: 2, ..request.clone() }, ok("forged"), &workers);
    // Nor a task it was never given.
    answer(&mut gw, peer, &TaskRequest { task_id: "nope".into(), ..request.clone() }, ok("forged"), &workers);
    assert_eq!(state(&gw, &id), TaskState::Running);
    assert_eq!(gw.in_flight_to(&peer), 1);
    assert_eq!(gw.get(&id).unwrap().attempts, 1);
    assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 5);
    assert!(sent(&mut gw).is_empty());
    check_invariants(&gw);

    answer(&mut gw, peer, &request, ok("real"), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(record.result.as_deref(), Some("real"));
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn mismatched_response_is_not_a_completion() {
    let mut gw = gateway();
    let workers = [worker(4, &[])];
    let w = workers[0].id;
    let mutations: [fn(&mut TaskResponse); 3] =
        [|r| r.task_id = "another".into(), |r| r.attempt += 1, |r| r.worker = PeerId::random().to_string()];
    for mutate in mutations {
        let id = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
        let (peer, request) = sent_one(&mut gw);
        let mut response = TaskResponse {
            v: WIRE_VERSION,
            task_id: request.task_id.clone(),
            attempt: request.attempt,
            worker: peer.to_string(),
            outcome: ok("x"),
            started_ms: None,
            fuel_used: None,
        };
        mutate(&mut response);
        gw.on_answer(peer, &request.task_id, request.attempt, Ok(response), &workers);
        let record = assert_final(&gw, &id, TaskState::Failed);
        assert_eq!(record.result, None);
        assert_eq!(record.attempt_history[0].outcome, "lost");
        assert!(record.attempt_history[0].error.as_deref().unwrap().contains("answered for another task"));
    }
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 0);
    assert_eq!(reason(&gw.metrics.messages_dropped, "mismatched_task_result"), 3);

    // An answer to A that carries B's result completes neither.
    let a = gw.submit(echo(), &workers).unwrap();
    let (_, ra) = sent_one(&mut gw);
    let b = gw.submit(echo(), &workers).unwrap();
    let (_, rb) = sent_one(&mut gw);
    let for_b = TaskResponse {
        v: WIRE_VERSION,
        task_id: b.clone(),
        attempt: 1,
        worker: w.to_string(),
        outcome: ok("b"),
        started_ms: None,
        fuel_used: None,
    };
    gw.on_answer(w, &a, ra.attempt, Ok(for_b), &workers);
    assert_eq!(state(&gw, &a), TaskState::Pending, "A's attempt failed and is retried");
    assert_eq!(state(&gw, &b), TaskState::Running);
    answer(&mut gw, w, &rb, ok("b"), &workers);
    assert_final(&gw, &b, TaskState::Completed);
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn network_error_fails_the_attempt_and_retries() {
    let mut gw = gateway();
    let workers = [worker(1, &[]), worker(1, &[])];
    let id = gw.submit(echo(), &workers).unwrap();
    let (p1, r1) = sent_one(&mut gw);
    let error = crate::network::DispatchError::ConnectionLost("connection reset".into());
    gw.on_answer(p1, &id, r1.attempt, Err(error), &workers);
    let record = gw.get(&id).unwrap();
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.attempt_history[0].outcome, "lost");
    // The network's error as it displays, word for word.
    assert_eq!(record.attempt_history[0].error.as_deref(), Some("connection to worker lost: connection reset"));
    run_for(&mut gw, ms(50), &workers).await;
    let (p2, r2) = sent_one(&mut gw);
    assert_ne!(p2, p1);
    answer(&mut gw, p2, &r2, ok("ok"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn lost_worker_fails_its_attempts_at_once_and_they_retry_elsewhere() {
    let mut gw = gateway();
    let a = worker(2, &[]);
    let b = worker(3, &[]);
    let only_a = std::slice::from_ref(&a);
    let t1 = gw.submit(echo(), only_a).unwrap();
    let t2 = gw.submit(echo(), only_a).unwrap();
    let on_a = sent(&mut gw);
    assert!(on_a.iter().all(|(p, _)| *p == a.id) && on_a.len() == 2);
    let t3 = gw.submit(echo(), std::slice::from_ref(&b)).unwrap();
    let (_, r3) = sent_one(&mut gw);

    let survivors = [b.clone()];
    gw.on_worker_lost(a.id, "dead", &survivors);
    for t in [&t1, &t2] {
        let record = gw.get(t).unwrap();
        assert_eq!(record.state, TaskState::Pending, "failed now, not at the deadline");
        assert_eq!(record.attempt_history[0].outcome, "lost");
        assert_eq!(record.attempt_history[0].error, Some(format!("worker {} dead", a.id)));
    }
    assert_eq!(state(&gw, &t3), TaskState::Running, "other workers' tasks are untouched");
    assert_eq!((gw.in_flight_to(&a.id), gw.in_flight_to(&b.id)), (0, 1));
    assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 2);
    check_invariants(&gw);

    // A late answer from the lost worker is ignored.
    answer(&mut gw, a.id, &on_a[0].1, ok("zombie"), &survivors);
    assert_eq!(state(&gw, &on_a[0].1.task_id), TaskState::Pending);

    run_for(&mut gw, ms(50), &survivors).await;
    let retried = sent(&mut gw);
    assert_eq!(retried.len(), 2);
    for (peer, request) in retried.iter().chain([(b.id, r3)].iter()) {
        assert_eq!(*peer, b.id);
        answer(&mut gw, *peer, request, ok("ok"), &survivors);
    }
    for t in [&t1, &t2, &t3] {
        assert_final(&gw, t, TaskState::Completed);
    }
    // Losing a worker that runs nothing is harmless.
    gw.on_worker_lost(PeerId::random(), "left", &survivors);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn compute_results_are_verified() {
    let mut gw = gateway();
    let workers = [worker(1, &["compute"]), worker(1, &["compute"])];
    let payload = "block-7";
    let id = gw.submit(TaskSpec { max_attempts: Some(4), ..spec("compute", payload) }, &workers).unwrap();

    let (p1, r1) = sent_one(&mut gw);
    answer(&mut gw, p1, &r1, ok("not a proof"), &workers);
    let record = gw.get(&id).unwrap();
    assert_eq!(record.state, TaskState::Pending, "an unverifiable result is retried");
    assert_eq!(record.attempt_history[0].outcome, "error");
    assert!(record.attempt_history[0].error.as_deref().unwrap().starts_with("result failed verification"));

    run_for(&mut gw, ms(50), &workers).await;
    let (p2, r2) = sent_one(&mut gw);
    assert_ne!(p2, p1);
    answer(&mut gw, p2, &r2, ok(&proof("some other payload", 4)), &workers);
    assert_eq!(state(&gw, &id), TaskState::Pending, "a proof of another payload is retried");

    run_for(&mut gw, ms(100), &workers).await;
    let (p3, r3) = sent_one(&mut gw);
    answer(&mut gw, p3, &r3, ok(&proof(payload, 0)), &workers);
    assert_eq!(state(&gw, &id), TaskState::Pending, "a proof below the difficulty is retried");
    check_invariants(&gw);

    run_for(&mut gw, ms(200), &workers).await;
    let (p4, r4) = sent_one(&mut gw);
    let good = proof(payload, 4);
    answer(&mut gw, p4, &r4, ok(&good), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(record.result, Some(good));
    assert_eq!(record.attempts, 4);
    assert_eq!(count(&gw.metrics.tasks_retried, "compute"), 3);
    assert_eq!(count(&gw.metrics.tasks_completed, "compute"), 1);
    check_invariants(&gw);
}
