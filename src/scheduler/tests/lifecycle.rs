//! Records from final state to forgotten: waiters are answered, old records pruned, everything
//! open failed when the node goes away, and every task ends exactly once.

use super::*;

#[tokio::test(start_paused = true)]
async fn wait_resolves_at_the_final_state() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let id = gw.submit(echo(), &workers).unwrap();
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, rx2) = oneshot::channel();
    gw.wait(&id, tx1).unwrap();
    gw.wait(&id, tx2).unwrap();
    assert_eq!(rx1.try_recv().unwrap_err(), TryRecvError::Empty);

    let (w, r1) = sent_one(&mut gw);
    answer(&mut gw, w, &r1, failed("flaky"), &workers);
    assert_eq!(rx1.try_recv().unwrap_err(), TryRecvError::Empty, "a retry is not final");
    run_for(&mut gw, ms(50), &workers).await;
    let (w, r2) = sent_one(&mut gw);
    answer(&mut gw, w, &r2, ok("result"), &workers);

    for rx in [rx1, rx2] {
        let record = rx.await.unwrap();
        assert_eq!(record.state, TaskState::Completed);
        assert_eq!(record.result.as_deref(), Some("result"));
    }
    // Waiting on a final task answers at once; on an unknown one is refused.
    let (tx, rx) = oneshot::channel();
    gw.wait(&id, tx).unwrap();
    assert_eq!(rx.await.unwrap().state, TaskState::Completed);
    let (tx, _rx) = oneshot::channel();
    assert_eq!(gw.wait("nope", tx), Err(CancelError::NotFound("nope".into())));

    // A waiter that went away does not disturb the task finishing.
    let other = gw.submit(echo(), &workers).unwrap();
    let (tx, rx) = oneshot::channel();
    gw.wait(&other, tx).unwrap();
    drop(rx);
    let (w, r) = sent_one(&mut gw);
    answer(&mut gw, w, &r, ok("x"), &workers);
    assert_final(&gw, &other, TaskState::Completed);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn wait_resolves_on_cancel_and_on_failure() {
    let mut gw = gateway();
    let workers = [worker(2, &[])];
    let a = gw.submit(echo(), &workers).unwrap();
    let b = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
    let (ta, ra) = oneshot::channel();
    let (tb, rb) = oneshot::channel();
    gw.wait(&a, ta).unwrap();
    gw.wait(&b, tb).unwrap();
    let effects = sent(&mut gw);
    let (wb, reqb) = effects.iter().find(|(_, r)| r.task_id == b).unwrap();
    gw.cancel(&a).unwrap();
    answer(&mut gw, *wb, reqb, failed("no"), &workers);
    assert_eq!(ra.await.unwrap().state, TaskState::Cancelled);
    assert_eq!(rb.await.unwrap().state, TaskState::Failed);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn prune_forgets_final_records_after_retention() {
    let mut gw = gateway_with(TasksConfig { retention_secs: 60, ..config() });
    let workers = [worker(2, &[])];
    let done = gw.submit(echo(), &workers).unwrap();
    let open = gw.submit(echo(), &workers).unwrap();
    let effects = sent(&mut gw);
    let (w, rd) = effects.iter().find(|(_, r)| r.task_id == done).unwrap().clone();
    answer(&mut gw, w, &rd, ok("x"), &workers);
    let finished_at = gw.finished.back().unwrap().0;

    gw.prune(finished_at + Duration::from_secs(59));
    assert!(gw.get(&done).is_some(), "kept within the retention");
    gw.prune(finished_at + Duration::from_secs(60));
    assert!(gw.get(&done).is_none(), "forgotten after the retention");
    assert_eq!(gw.cancel(&done), Err(CancelError::NotFound(done.clone())));
    let (tx, _rx) = oneshot::channel();
    assert!(gw.wait(&done, tx).is_err());
    assert!(gw.list(10).iter().all(|r| r.id != done));
    check_invariants_after_prune(&gw, 1);

    // An unfinished task is never pruned, however old.
    gw.prune(finished_at + Duration::from_secs(1_000_000));
    assert_eq!(state(&gw, &open), TaskState::Running);
    let (w, ro) = effects.iter().find(|(_, r)| r.task_id == open).unwrap().clone();
    answer(&mut gw, w, &ro, ok("y"), &workers);
    let open_finished_at = gw.finished.back().unwrap().0;
    gw.prune(open_finished_at + Duration::from_secs(59));
    assert!(gw.get(&open).is_some());
    gw.prune(open_finished_at + Duration::from_secs(60));
    assert!(gw.get(&open).is_none());
    assert!(gw.entries.is_empty() && gw.finished.is_empty());
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 2, "pruning does not touch the counters");
    check_invariants_after_prune(&gw, 2);
}

#[tokio::test(start_paused = true)]
async fn many_tasks_each_reach_exactly_one_final_state() {
    // A mixed workload across busy, failing, slow, lost and well-behaved workers.
    let mut gw = gateway_with(TasksConfig { max_attempts: 4, ..config() });
    let mut workers: Vec<WorkerView> = (0..4).map(|_| worker(2, &[])).collect();
    let ids: Vec<String> = (0..40)
        .map(|i| gw.submit(TaskSpec { timeout_ms: Some(500), ..spec("echo", &i.to_string()) }, &workers).unwrap())
        .collect();
    let mut step = 0u32;
    for _round in 0..200 {
        for (peer, request) in sent(&mut gw) {
            step += 1;
            let outcome = match step % 6 {
                0 => err(TaskError::Busy),
                1 => failed("flaky"),
                2 => continue, // never answers: the deadline handles it
                _ => ok(&request.payload),
            };
            answer(&mut gw, peer, &request, outcome, &workers);
        }
        if step > 30 && workers.len() == 4 {
            let lost = workers.remove(0);
            gw.on_worker_lost(lost.id, "dead", &workers);
        }
        check_invariants(&gw);
        if gw.unfinished() == 0 {
            break;
        }
        run_for(&mut gw, ms(100), &workers).await;
    }
    assert_eq!(gw.unfinished(), 0);
    for id in &ids {
        let record = gw.get(id).unwrap();
        assert!(record.state.is_final());
        if record.state == TaskState::Completed {
            assert_eq!(record.result.as_deref(), Some(record.payload.as_str()));
        }
    }
    assert!(!gw.has_timers());
    check_invariants(&gw);
}
