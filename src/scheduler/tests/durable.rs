//! The gateway with a store: acknowledgements wait for the commit, final records leave
//! memory, and a new gateway on the same store resumes what the old one left unfinished.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::protocol::Fenced;
use crate::store::Store;
use crate::store::tasks::{Committed, TaskLog};

fn durable_gateway(log: TaskLog) -> Gateway {
    let mut gw = Gateway::new(PeerId::random(), config(), Metrics::new(&mut Registry::default()), Some(log), None);
    gw.rng = StdRng::seed_from_u64(0x5eed);
    gw
}

/// Hands the changed records to the writer and feeds its reports back until all is durable.
async fn settle(gw: &mut Gateway, committed: &mut UnboundedReceiver<Committed>) {
    gw.flush();
    while gw.holding() {
        let c = committed.recv().await.expect("the writer reports");
        gw.on_committed(c.seq, c.result);
    }
}

#[tokio::test]
async fn a_submission_is_acknowledged_only_once_its_record_is_stored() {
    let (log, mut committed) = TaskLog::start(Store::in_memory());
    let mut gw = durable_gateway(log.clone());
    let w = worker(1, &[]);
    let id = gw.submit(echo(), std::slice::from_ref(&w)).unwrap();
    let (tx, mut ack) = oneshot::channel();
    gw.after_commit(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    assert_eq!(ack.try_recv(), Err(TryRecvError::Empty), "acknowledged before the write");
    assert!(log.get(&id).unwrap().is_none());
    settle(&mut gw, &mut committed).await;
    assert_eq!(ack.try_recv(), Ok(Ok(())));
    let stored = super::super::durable::decode(&log.get(&id).unwrap().unwrap()).unwrap();
    assert_eq!(stored.record.state, TaskState::Running, "dispatched in the same pass");
    assert_eq!(stored.record.attempts, 1);
}

#[tokio::test]
async fn a_final_record_leaves_memory_and_is_served_from_the_store() {
    let (log, mut committed) = TaskLog::start(Store::in_memory());
    let mut gw = durable_gateway(log);
    let w = worker(1, &[]);
    let id = gw.submit(echo(), std::slice::from_ref(&w)).unwrap();
    let (waiter, mut done) = oneshot::channel();
    gw.wait(&id, waiter).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok("hello"), &[w]);
    assert_eq!(done.try_recv().err(), Some(TryRecvError::Empty), "the final record is told before it is stored");
    settle(&mut gw, &mut committed).await;
    assert_eq!(done.try_recv().unwrap().state, TaskState::Completed);
    assert!(!gw.entries.contains_key(&id), "a stored final record stays in memory");
    assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(gw.list(10).len(), 1);
    assert!(matches!(gw.cancel(&id), Err(CancelError::AlreadyFinal(_, "completed"))));
    let (late, mut told) = oneshot::channel();
    gw.wait(&id, late).unwrap();
    assert_eq!(told.try_recv().unwrap().result.as_deref(), Some("hello"));
}

#[tokio::test]
async fn a_new_gateway_resumes_unfinished_tasks_with_attempt_numbers_continuing() {
    let store = Store::in_memory();
    let (log, mut committed) = TaskLog::start(store.clone());
    let mut old = durable_gateway(log);
    let w = worker(2, &[]);
    let running = old.submit(spec("sleep", "100"), std::slice::from_ref(&w)).unwrap();
    let finished = old.submit(echo(), std::slice::from_ref(&w)).unwrap();
    for (peer, request) in sent(&mut old) {
        if request.task_id == finished {
            answer(&mut old, peer, &request, ok("hello"), std::slice::from_ref(&w));
        }
    }
    settle(&mut old, &mut committed).await;
    drop(old); // the crash: nothing of it but the store remains

    let (log, mut committed) = TaskLog::start(store);
    let mut new = durable_gateway(log);
    assert_eq!(new.restore().unwrap(), 1, "only the unfinished task is resumed");
    assert_final(&new, &finished, TaskState::Completed);
    let record = new.get(&running).unwrap();
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.attempt_history[0].outcome, "lost", "{record:#?}");
    let w2 = worker(1, &[]);
    new.pump(std::slice::from_ref(&w2));
    let (peer, request) = sent_one(&mut new);
    assert_eq!(request.attempt, 2, "attempt numbers continue");
    // An answer to the attempt from before the crash can never complete it.
    let stale = TaskRequest { attempt: 1, ..request.clone() };
    answer(&mut new, w.id, &stale, ok("0"), std::slice::from_ref(&w2));
    assert_eq!(state(&new, &running), TaskState::Running);
    answer(&mut new, peer, &request, ok("0"), &[w2]);
    settle(&mut new, &mut committed).await;
    let record = new.get(&running).unwrap();
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!(record.attempts, 2);
}

#[tokio::test]
async fn the_budget_of_attempts_carries_over_a_restart() {
    let store = Store::in_memory();
    let (log, mut committed) = TaskLog::start(store.clone());
    let mut old = durable_gateway(log);
    let w = worker(1, &[]);
    let spec = TaskSpec { max_attempts: Some(2), ..spec("sleep", "10") };
    let id = old.submit(spec, std::slice::from_ref(&w)).unwrap();
    let (peer, request) = sent_one(&mut old);
    answer(&mut old, peer, &request, failed("boom"), std::slice::from_ref(&w));
    settle(&mut old, &mut committed).await;
    drop(old);

    let (log, _committed) = TaskLog::start(store);
    let mut new = durable_gateway(log);
    new.restore().unwrap();
    // The retry backoff did not survive; the task waits in the queue for its last attempt.
    new.pump(std::slice::from_ref(&w));
    let (peer, request) = sent_one(&mut new);
    answer(&mut new, peer, &request, failed("boom again"), &[w]);
    let record = assert_final(&new, &id, TaskState::Failed);
    assert_eq!(record.attempts, 2, "{record:#?}");
}

/// The gateway of `durable_gateway` with copies on one holder, waiting `adopt_after_secs` 2.
fn copying_gateway(local: PeerId, log: TaskLog) -> Gateway {
    let config = TasksConfig { record_copies: 1, adopt_after_secs: 2, ..config() };
    Gateway::new(local, config, Metrics::new(&mut Registry::default()), Some(log), None)
}

/// A restarted gateway's task waits for its copy holder's word while the gateway is still
/// joining (the holder cannot answer before), and from the join on the holder gets the
/// whole wait; a gateway that never sees anyone runs it after six waits.
/// The copies request a restored gateway sends its holder: (tag, ids asked about).
fn asked(gw: &mut Gateway, holder: PeerId) -> (u64, Vec<String>) {
    let mut asks = gw.take_effects().into_iter().filter_map(|e| match e {
        Effect::Replicate { peer, tag, records } if peer == holder => {
            assert!(records.iter().all(|r| r.restored), "{records:?}");
            Some((tag, records.into_iter().map(|r| r.id).collect()))
        }
        _ => None,
    });
    let ask = asks.next().expect("the holder is asked");
    assert!(asks.next().is_none(), "one request in flight per holder");
    ask
}

/// `tasks` sleep tasks accepted by gateway `local` with their copies on `holder`; then the
/// gateway again on the same store, restored and joined (the holder seen alive), its first
/// batch flushed. Returns it and the task ids.
async fn restarted_and_joined(local: PeerId, holder: PeerId, w: &WorkerView, tasks: usize) -> (Gateway, Vec<String>) {
    let store = Store::in_memory();
    let (log, mut committed) = TaskLog::start(store.clone());
    let mut old = copying_gateway(local, log);
    old.set_members([holder]);
    let ids: Vec<String> =
        (0..tasks).map(|_| old.submit(spec("sleep", "100"), std::slice::from_ref(w)).unwrap()).collect();
    settle(&mut old, &mut committed).await;
    drop(old);
    let (log, _committed) = TaskLog::start(store);
    let mut new = copying_gateway(local, log);
    assert_eq!(new.restore().unwrap(), tasks);
    new.set_members([holder]);
    new.owner_back(&holder);
    new.flush();
    (new, ids)
}

/// A holder that is alive and asked, but slow to answer, is waited for past the wait (it may
/// have adopted the task: running it again would run it twice); a request to it that fails
/// is asked again, and a holder that never answers holds the task for three waits at most.
#[tokio::test]
async fn a_restored_task_waits_past_the_wait_for_an_answer_on_its_way() {
    let local = PeerId::random();
    let holder = PeerId::random();
    let w = worker(1, &[]);
    let (mut new, mut both) = restarted_and_joined(local, holder, &w, 2).await;
    let joined = Instant::now();
    let (adopted, unanswered) = (both[0].clone(), both[1].clone());
    let (tag, mut ids) = asked(&mut new, holder);
    ids.sort();
    both.sort();
    assert_eq!(ids, both);

    // The wait ends with the answer still on its way: both wait on.
    new.tick_copies(joined + Duration::from_millis(2100));
    assert_eq!(new.confirming(), 2, "resumed while the holder's answer was on its way");
    new.pump(std::slice::from_ref(&w));
    assert!(sent(&mut new).is_empty());

    // The answer: the holder adopted one task and has nothing newer of the other.
    let fenced = vec![Fenced { id: adopted.clone(), owner: holder.to_string(), epoch: 2 }];
    new.on_replicated(holder, tag, Ok((fenced, Vec::new())));
    assert_eq!(new.confirming(), 0);
    new.pump(std::slice::from_ref(&w));
    let (_, request) = sent_one(&mut new);
    assert_eq!(request.task_id, unanswered, "only the task nobody adopted runs");
    assert_eq!(new.get(&adopted).unwrap().owner, holder.to_string());

    // Another restart: this time every request fails (the holder is alive but cannot be
    // reached). Each failure asks again at the next tick; after three waits it runs anyway.
    let (mut new, ids) = restarted_and_joined(local, holder, &w, 1).await;
    let mut now = Instant::now();
    let (mut tag, _) = asked(&mut new, holder);
    for wait in 1..=3 {
        new.on_replicated(holder, tag, Err("dial failed".into()));
        assert_eq!(new.confirming(), 1, "a failure is not an answer");
        new.tick_copies(now + Duration::from_millis(250));
        new.flush();
        (tag, _) = asked(&mut new, holder);
        now += Duration::from_millis(2100);
        new.tick_copies(now);
        assert_eq!(new.confirming(), 1, "wait {wait}: asked again, the answer may be on its way");
        new.pump(std::slice::from_ref(&w));
        assert!(sent(&mut new).is_empty());
    }
    now += Duration::from_millis(2100);
    new.tick_copies(now);
    assert_eq!(new.confirming(), 0, "three waits on a holder that never answers are enough");
    new.pump(std::slice::from_ref(&w));
    assert_eq!(sent_one(&mut new).1.task_id, ids[0]);
}

#[tokio::test]
async fn a_restored_task_waits_for_its_holder_while_its_gateway_joins() {
    let store = Store::in_memory();
    let (log, mut committed) = TaskLog::start(store.clone());
    let local = PeerId::random();
    let holder = PeerId::random();
    let mut old = copying_gateway(local, log);
    old.set_members([holder]);
    let w = worker(1, &[]);
    let id = old.submit(spec("sleep", "100"), std::slice::from_ref(&w)).unwrap();
    settle(&mut old, &mut committed).await;
    assert_eq!(old.get(&id).unwrap().copies, vec![holder.to_string()]);
    drop(old);

    for joins in [true, false] {
        let (log, _committed) = TaskLog::start(store.clone());
        let mut new = copying_gateway(local, log);
        let restored = Instant::now();
        assert_eq!(new.restore().unwrap(), 1);
        assert_eq!(new.confirming(), 1);
        // Three seconds (more than one wait) go by while it is still joining.
        new.tick_copies(restored + Duration::from_secs(3));
        assert_eq!(new.confirming(), 1, "resumed before anyone could answer");
        if joins {
            new.set_members([holder]);
            new.owner_back(&holder);
            let joined = Instant::now();
            new.tick_copies(joined + Duration::from_millis(1500));
            assert_eq!(new.confirming(), 1, "the holder seen alive gets the whole wait");
            new.tick_copies(joined + Duration::from_millis(2100));
        } else {
            new.tick_copies(restored + Duration::from_secs(11));
            assert_eq!(new.confirming(), 1, "alone, it waits six times as long");
            new.tick_copies(restored + Duration::from_millis(12_100));
        }
        assert_eq!(new.confirming(), 0, "a holder that never answers does not hold it forever");
        new.pump(std::slice::from_ref(&w));
        let (_, request) = sent_one(&mut new);
        assert_eq!(request.task_id, id);
    }
}
