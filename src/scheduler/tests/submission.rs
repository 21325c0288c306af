//! Submitting: what is refused (and counted under which reason), and the request an accepted
//! task goes out with.

use super::*;

#[tokio::test(start_paused = true)]
async fn submit_refuses_unknown_type() {
    let mut gw = gateway();
    let workers = [worker(4, &["compute", "storage"])];
    let e = gw.submit(spec("mine-bitcoin", "x"), &workers).unwrap_err();
    assert_eq!(e, SubmitError::UnknownType("mine-bitcoin".into()));
    assert!(e.to_string().contains("known types: compute, storage, echo, sleep, fail"), "{e}");
    assert_eq!(reason(&gw.metrics.tasks_rejected, "unknown_type"), 1);
    assert!(gw.entries.is_empty());
    assert!(sent(&mut gw).is_empty());
    assert!(!gw.has_timers());
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn submit_refuses_bad_payload() {
    let mut gw = gateway();
    let workers = [worker(4, &["compute", "storage"])];
    for (task_type, payload) in
        [("sleep", "soon"), ("sleep", "600001"), ("storage", "delete k"), ("storage", "put k"), ("storage", "get")]
    {
        match gw.submit(spec(task_type, payload), &workers) {
            Err(SubmitError::Invalid { field: "payload", message }) => assert!(!message.is_empty()),
            other => panic!("{task_type} {payload:?}: expected a payload error, got {other:?}"),
        }
    }
    // Payload checks come before the capability check.
    assert!(matches!(gw.submit(spec("sleep", "soon"), &[]), Err(SubmitError::Invalid { field: "payload", .. })));
    assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_payload"), 6);
    assert!(gw.entries.is_empty());
    // The same types with good payloads are accepted.
    gw.submit(spec("sleep", "10"), &workers).unwrap();
    gw.submit(spec("storage", "get k"), &workers).unwrap();
    gw.submit(spec("storage", "put k some value"), &workers).unwrap();
    assert_eq!(sent(&mut gw).len(), 3);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn submit_checks_timeout_bounds() {
    let mut gw = gateway();
    let workers = [worker(10, &[])];
    for t in [0, MAX_TIMEOUT_MS + 1, u64::MAX] {
        let e = gw.submit(TaskSpec { timeout_ms: Some(t), ..echo() }, &workers).unwrap_err();
        assert!(matches!(e, SubmitError::Invalid { field: "timeout_ms", .. }), "{t}: {e:?}");
    }
    assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_timeout"), 3);
    assert!(gw.entries.is_empty());
    for (timeout, expected) in [(Some(1), 1), (Some(MAX_TIMEOUT_MS), MAX_TIMEOUT_MS), (None, 10_000)] {
        let id = gw.submit(TaskSpec { timeout_ms: timeout, ..echo() }, &workers).unwrap();
        let (_, request) = sent_one(&mut gw);
        assert_eq!(request.task_id, id);
        assert_eq!(request.deadline_ms, expected, "timeout {timeout:?}");
    }
    // A default timeout out of range is refused the same way.
    let mut gw = gateway_with(TasksConfig { default_timeout_ms: 0, ..config() });
    assert!(matches!(gw.submit(echo(), &workers), Err(SubmitError::Invalid { field: "timeout_ms", .. })));
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn submit_checks_max_attempts_bounds() {
    let mut gw = gateway();
    let workers = [worker(10, &[])];
    for n in [0, 101, u32::MAX] {
        let e = gw.submit(TaskSpec { max_attempts: Some(n), ..echo() }, &workers).unwrap_err();
        assert_eq!(e, SubmitError::Invalid { field: "max_attempts", message: "must be 1..=100".into() }, "{n}");
    }
    assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_max_attempts"), 3);
    for (asked, expected) in [(Some(1), 1), (Some(100), 100), (None, 3)] {
        let id = gw.submit(TaskSpec { max_attempts: asked, ..echo() }, &workers).unwrap();
        assert_eq!(gw.entries[&id].max_attempts, expected, "{asked:?}");
    }
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn submit_refuses_when_no_worker_has_the_capability() {
    let mut gw = gateway();
    let storage_only = [worker(4, &["storage"]), worker(4, &["storage"])];
    let e = gw.submit(spec("compute", "data"), &storage_only).unwrap_err();
    assert_eq!(e, SubmitError::NoCapableWorker { capability: "compute".into(), alive: 2 });
    let message = e.to_string();
    assert!(message.contains("\"compute\"") && message.contains("2 alive workers"), "{message}");

    let e = gw.submit(spec("storage", "get k"), &[worker(1, &["compute"])]).unwrap_err();
    assert_eq!(e, SubmitError::NoCapableWorker { capability: "storage".into(), alive: 1 });

    // Test types run anywhere, but there must be some worker.
    let e = gw.submit(echo(), &[]).unwrap_err();
    assert_eq!(e, SubmitError::NoCapableWorker { capability: "worker".into(), alive: 0 });
    assert!(e.to_string().contains("0 alive workers"), "{e}");

    assert_eq!(reason(&gw.metrics.tasks_rejected, "no_capable_worker"), 3);
    assert!(gw.entries.is_empty());
    // A worker at capacity still qualifies: the task is accepted and waits.
    let busy = [worker(1, &["compute"])];
    gw.submit(spec("compute", "a"), &busy).unwrap();
    gw.submit(spec("compute", "b"), &busy).unwrap();
    assert_eq!(gw.queued(), 1);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn submit_refuses_when_queue_is_full() {
    let mut gw = gateway_with(TasksConfig { queue_capacity: 2, ..config() });
    let workers = [worker(1, &[])];
    let a = gw.submit(echo(), &workers).unwrap();
    let (peer, ra) = sent_one(&mut gw);
    let b = gw.submit(echo(), &workers).unwrap();
    let _c = gw.submit(echo(), &workers).unwrap();
    assert_eq!(gw.queued(), 2);
    assert!(sent(&mut gw).is_empty());

    let e = gw.submit(echo(), &workers).unwrap_err();
    assert_eq!(e, SubmitError::QueueFull(2));
    assert!(e.to_string().contains("2 tasks waiting"), "{e}");
    assert_eq!(reason(&gw.metrics.tasks_rejected, "queue_full"), 1);
    let limit = crate::metrics::LimitLabels { limit: "task_queue" };
    assert_eq!(gw.metrics.limit_hits.get_or_create(&limit).get(), 1);
    assert_eq!(count(&gw.metrics.tasks_submitted, "echo"), 3);
    assert_eq!(gw.entries.len(), 3);

    // Once the worker answers, the head of the queue runs and there is room again.
    answer(&mut gw, peer, &ra, ok("a"), &workers);
    assert_final(&gw, &a, TaskState::Completed);
    let (_, rb) = sent_one(&mut gw);
    assert_eq!(rb.task_id, b);
    assert_eq!(gw.queued(), 1);
    gw.submit(echo(), &workers).unwrap();
    assert_eq!(gw.queued(), 2);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn accepted_task_is_dispatched_with_a_well_formed_request() {
    let mut gw = gateway();
    let workers = [worker(2, &["compute"])];
    let id = gw.submit(TaskSpec { timeout_ms: Some(2_500), ..spec("compute", "block-1") }, &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    assert_eq!(peer, workers[0].id);
    assert_eq!(
        request,
        TaskRequest {
            v: WIRE_VERSION,
            task_id: id.clone(),
            attempt: 1,
            task_type: "compute".into(),
            payload: "block-1".into(),
            required_capabilities: vec!["compute".into()],
            deadline_ms: 2_500,
            trace: None,
        }
    );
    let record = gw.get(&id).unwrap();
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.task_type, "compute");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.worker, Some(peer.to_string()));
    assert_eq!(
        record.attempt_history,
        vec![AttemptRecord { attempt: 1, worker: peer.to_string(), outcome: "running".into(), error: None }]
    );
    assert_eq!((gw.running(), gw.in_flight_to(&peer), gw.queued(), gw.unfinished()), (1, 1, 0, 1));
    assert_eq!(count(&gw.metrics.tasks_submitted, "compute"), 1);

    gw.submit(echo(), &workers).unwrap();
    let (_, request) = sent_one(&mut gw);
    assert!(request.required_capabilities.is_empty());
    assert_eq!(request.deadline_ms, 10_000);
    check_invariants(&gw);
}
