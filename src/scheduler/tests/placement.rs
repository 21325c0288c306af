//! Placement and queueing: only capable workers with room get a task, others wait in order, and
//! the local node runs its share without the network.

use super::*;

#[tokio::test(start_paused = true)]
async fn placement_only_on_workers_with_the_capability() {
    let mut gw = gateway();
    let storage = worker(100, &["storage"]);
    let compute = worker(2, &["compute"]);
    let workers = [storage.clone(), compute.clone()];
    let ids: Vec<String> = (0..5).map(|i| gw.submit(spec("compute", &format!("job-{i}")), &workers).unwrap()).collect();
    let mut pending = sent(&mut gw);
    assert_eq!(pending.len(), 2, "only the compute worker's two slots are used");
    assert_eq!(gw.queued(), 3);
    assert_eq!(gw.in_flight_to(&storage.id), 0);

    // Pumping with only the storage worker alive places nothing.
    gw.pump(std::slice::from_ref(&storage));
    assert!(sent(&mut gw).is_empty());

    // Storage tasks go to the storage worker; echo goes wherever there is room.
    gw.submit(spec("storage", "get k"), &workers).unwrap();
    assert_eq!(sent_one(&mut gw).0, storage.id);
    gw.submit(echo(), &workers).unwrap();
    assert_eq!(sent_one(&mut gw).0, storage.id, "the compute worker is full");

    let mut completed = 0;
    while let Some((peer, request)) = pending.pop() {
        assert_eq!(peer, compute.id, "compute task {} placed on a worker without the capability", request.task_id);
        answer(&mut gw, peer, &request, ok(&proof(&request.payload, 4)), &workers);
        completed += 1;
        pending.extend(sent(&mut gw));
        check_invariants(&gw);
    }
    assert_eq!(completed, 5);
    for id in &ids {
        assert_final(&gw, id, TaskState::Completed);
    }
    assert_eq!(count(&gw.metrics.tasks_completed, "compute"), 5);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn task_waits_while_workers_are_full_and_runs_when_one_answers() {
    let mut gw = gateway();
    let workers = [worker(1, &[])];
    let a = gw.submit(echo(), &workers).unwrap();
    let (peer, ra) = sent_one(&mut gw);
    let b = gw.submit(echo(), &workers).unwrap();
    assert!(sent(&mut gw).is_empty());
    assert_eq!(gw.queued(), 1);
    let record = gw.get(&b).unwrap();
    assert_eq!((record.state, record.attempts), (TaskState::Pending, 0));
    check_invariants(&gw);

    gw.pump(&workers);
    assert!(sent(&mut gw).is_empty(), "still no room");

    answer(&mut gw, peer, &ra, ok("first"), &workers);
    let record = assert_final(&gw, &a, TaskState::Completed);
    assert_eq!(record.result.as_deref(), Some("first"));
    assert_eq!(record.attempt_history[0].outcome, "ok");
    let (peer_b, rb) = sent_one(&mut gw);
    assert_eq!((peer_b, rb.task_id.as_str(), rb.attempt), (peer, b.as_str(), 1));
    assert_eq!(gw.queued(), 0);
    answer(&mut gw, peer_b, &rb, ok("second"), &workers);
    assert_final(&gw, &b, TaskState::Completed);
    assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 2);
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn queued_task_goes_to_a_worker_that_joins() {
    let mut gw = gateway();
    let first = worker(1, &[]);
    let id_a = gw.submit(echo(), std::slice::from_ref(&first)).unwrap();
    let id_b = gw.submit(echo(), std::slice::from_ref(&first)).unwrap();
    assert_eq!(sent_one(&mut gw).1.task_id, id_a);
    let joined = worker(1, &[]);
    gw.pump(&[first.clone(), joined.clone()]);
    let (peer, request) = sent_one(&mut gw);
    assert_eq!((peer, request.task_id), (joined.id, id_b));
    check_invariants(&gw);
}

#[tokio::test(start_paused = true)]
async fn local_worker_gets_a_run_local_effect() {
    let mut gw = gateway();
    let local = gw.local;
    let me = WorkerView { id: local, capacity: 1, capabilities: vec!["storage".into()] };
    let remote = worker(1, &["compute"]);
    let workers = [me, remote.clone()];

    let id = gw.submit(spec("storage", "get k"), &workers).unwrap();
    let effects = gw.take_effects();
    let request = match &effects[..] {
        [Effect::RunLocal { request }] => request.clone(),
        other => panic!("expected one RunLocal, got {other:?}"),
    };
    assert_eq!((request.task_id.as_str(), request.attempt), (id.as_str(), 1));
    assert_eq!(gw.get(&id).unwrap().worker, Some(local.to_string()));
    assert_eq!(gw.in_flight_to(&local), 1);

    // Tasks the local node cannot run go out over the network.
    gw.submit(spec("compute", "c"), &workers).unwrap();
    assert!(matches!(&gw.take_effects()[..], [Effect::Dispatch { peer, .. }] if *peer == remote.id));

    answer(&mut gw, local, &request, ok("v"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    check_invariants(&gw);
}
