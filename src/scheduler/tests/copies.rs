//! Record copies: placement agrees everywhere, acknowledgements wait for the copies or the
//! local sync as `tasks.fsync` says, a holder adopts a lost gateway's tasks, and epochs fence
//! the old owner out.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::config::Fsync;
use crate::protocol::RecordCopy;
use crate::scheduler::copies::{place, placement_key};
use crate::store::Store;
use crate::store::copies::CopyLog;
use crate::store::tasks::{Committed, TaskLog};

fn keyed(peers: &[PeerId]) -> Vec<(PeerId, u64)> {
    peers.iter().map(|p| (*p, placement_key(&p.to_bytes()))).collect()
}

#[test]
fn placement_is_the_same_for_the_same_members_in_any_order_and_moves_little() {
    let members: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    let mut shuffled = members.clone();
    shuffled.reverse();
    shuffled.swap(2, 7);
    let mut moved = 0;
    for i in 0..500 {
        let id = format!("task-{i}");
        let a = place(&id, &keyed(&members), 2);
        assert_eq!(a, place(&id, &keyed(&shuffled), 2), "same members, same holders");
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
        // One member leaves: only the records it held move, and the other holder stays.
        let gone = members[3];
        let rest: Vec<PeerId> = members.iter().copied().filter(|p| *p != gone).collect();
        let b = place(&id, &keyed(&rest), 2);
        if a.contains(&gone) {
            moved += 1;
            assert!(a.iter().filter(|p| **p != gone).all(|p| b.contains(p)), "{a:?} -> {b:?}");
        } else {
            assert_eq!(a, b, "a record whose holders stayed does not move");
        }
    }
    // 2 of 10 members hold each record: about a fifth of them had the one that left.
    assert!((50..=160).contains(&moved), "{moved} of 500 moved");
    assert!(place("x", &[], 1).is_empty());
}

struct Owner {
    gw: Gateway,
    committed: UnboundedReceiver<Committed>,
    holder: PeerId,
}

fn owner(fsync: Fsync, members: usize) -> Owner {
    let (log, committed) = TaskLog::start(Store::in_memory());
    let config = TasksConfig { fsync, record_copies: 1, ..config() };
    let mut gw = Gateway::new(PeerId::random(), config, Metrics::new(&mut Registry::default()), Some(log), None);
    let peers: Vec<PeerId> = (0..members).map(|_| PeerId::random()).collect();
    gw.set_members(peers.clone());
    Owner { gw, committed, holder: peers.first().copied().unwrap_or_else(PeerId::random) }
}

fn replicated(gw: &mut Gateway) -> Vec<(PeerId, u64, Vec<RecordCopy>)> {
    gw.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Replicate { peer, tag, records } => Some((peer, tag, records)),
            _ => None,
        })
        .collect()
}

fn submit_acked(gw: &mut Gateway, workers: &[WorkerView]) -> (String, oneshot::Receiver<Result<(), SubmitError>>) {
    let id = gw.submit(echo(), workers).unwrap();
    let (tx, ack) = oneshot::channel();
    gw.after_commit(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    gw.flush();
    (id, ack)
}

#[tokio::test]
async fn with_group_fsync_the_holders_answer_acknowledges_before_the_local_sync() {
    let Owner { mut gw, holder, .. } = owner(Fsync::Group, 1);
    let w = worker(1, &[]);
    let (id, mut ack) = submit_acked(&mut gw, std::slice::from_ref(&w));
    let batches = replicated(&mut gw);
    assert_eq!(batches.len(), 1, "one batch to the one holder");
    let (peer, seq, records) = &batches[0];
    assert_eq!(*peer, holder);
    assert_eq!(records[0].id, id);
    assert_eq!(gw.get(&id).unwrap().copies, vec![holder.to_string()]);
    assert_eq!(ack.try_recv(), Err(TryRecvError::Empty), "acknowledged before the copy is held");
    gw.on_replicated(holder, *seq, Ok((Vec::new(), Vec::new())));
    assert_eq!(ack.try_recv(), Ok(Ok(())), "the copy releases it; the local sync may still run");
}

#[tokio::test]
async fn a_holder_has_one_request_in_flight_and_the_next_carries_the_newest_versions() {
    let Owner { mut gw, holder, .. } = owner(Fsync::Group, 1);
    let w = worker(4, &[]);
    let (a, mut ack_a) = submit_acked(&mut gw, std::slice::from_ref(&w));
    let (_, tag, first) = replicated(&mut gw).remove(0);
    assert_eq!(first.len(), 1);
    // Two more flushes while the first request is in flight: nothing is sent yet.
    let (b, mut ack_b) = submit_acked(&mut gw, std::slice::from_ref(&w));
    gw.touch(&a);
    gw.flush();
    assert!(replicated(&mut gw).is_empty(), "one request in flight per holder");
    gw.on_replicated(holder, tag, Ok((Vec::new(), Vec::new())));
    assert_eq!(ack_a.try_recv(), Ok(Ok(())));
    assert_eq!(ack_b.try_recv(), Err(TryRecvError::Empty), "its copy is not held yet");
    // The answer sends what waited, one version per record.
    let (_, next, records) = replicated(&mut gw).remove(0);
    let mut ids: Vec<&str> = records.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    gw.on_replicated(holder, next, Ok((Vec::new(), Vec::new())));
    assert_eq!(ack_b.try_recv(), Ok(Ok(())));
}

#[tokio::test]
async fn with_fsync_always_only_the_local_sync_acknowledges() {
    let Owner { mut gw, mut committed, holder } = owner(Fsync::Always, 1);
    let w = worker(1, &[]);
    let (_, mut ack) = submit_acked(&mut gw, std::slice::from_ref(&w));
    let (_, seq, _) = replicated(&mut gw).remove(0);
    gw.on_replicated(holder, seq, Ok((Vec::new(), Vec::new())));
    assert_eq!(ack.try_recv(), Err(TryRecvError::Empty), "the copy does not release it");
    let c = committed.recv().await.unwrap();
    gw.on_committed(c.seq, c.result);
    assert_eq!(ack.try_recv(), Ok(Ok(())));
}

#[tokio::test]
async fn a_cluster_without_a_member_to_hold_a_copy_waits_for_the_local_sync() {
    let Owner { mut gw, mut committed, .. } = owner(Fsync::Group, 0);
    let w = worker(1, &[]);
    let (id, mut ack) = submit_acked(&mut gw, std::slice::from_ref(&w));
    assert!(replicated(&mut gw).is_empty());
    assert!(gw.get(&id).unwrap().copies.is_empty());
    assert_eq!(ack.try_recv(), Err(TryRecvError::Empty));
    let c = committed.recv().await.unwrap();
    gw.on_committed(c.seq, c.result);
    assert_eq!(ack.try_recv(), Ok(Ok(())));
}

/// A holder: a gateway with a copy store, whose members include `owner`.
fn holder(owner: PeerId, others: &[PeerId]) -> (Gateway, CopyLog) {
    let store = Store::in_memory();
    let copies = CopyLog::start(store.clone());
    let (log, _committed) = TaskLog::start(store);
    let config = TasksConfig { record_copies: 1, adopt_after_secs: 1, ..config() };
    let mut gw =
        Gateway::new(PeerId::random(), config, Metrics::new(&mut Registry::default()), Some(log), Some(copies.clone()));
    gw.set_members(std::iter::once(owner).chain(others.iter().copied()));
    (gw, copies)
}

/// Waits (bounded) until the copy store's writer has `id`.
async fn kept(copies: &CopyLog, id: &str) {
    for _ in 0..500 {
        if copies.get(id).unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("copy {id} never written");
}

#[tokio::test]
async fn a_holder_adopts_a_lost_gateways_task_with_a_higher_epoch_and_fences_the_old_owner() {
    let Owner { gw: mut old, .. } = owner(Fsync::Group, 0);
    let (mut adopter, copies) = holder(old.local, &[]);
    old.set_members([adopter.local]);
    let w = worker(1, &[]);
    let (id, _ack) = submit_acked(&mut old, std::slice::from_ref(&w));
    let (peer, tag, records) = replicated(&mut old).remove(0);
    assert_eq!(peer, adopter.local);
    let (fenced, finals) = adopter.keep_copies(old.local, records);
    assert!(fenced.is_empty() && finals.is_empty());
    old.on_replicated(peer, tag, Ok((fenced, finals)));
    kept(&copies, &id).await;

    // The old owner is declared dead; once the grace is over, its task is adopted.
    let now = Instant::now();
    adopter.owner_lost(old.local, now);
    assert_eq!(adopter.adopt_due(now), 0, "not before the grace");
    assert_eq!(adopter.adopt_due(now + Duration::from_secs(2)), 1);
    let record = adopter.get(&id).unwrap();
    assert_eq!(record.epoch, 2);
    assert_eq!(record.owner, adopter.local.to_string());
    assert_eq!(record.adopted_from, Some(old.local.to_string()));
    adopter.pump(std::slice::from_ref(&w));
    let (to, request) = sent_one(&mut adopter);
    assert_eq!(to, w.id);
    assert_eq!(request.attempt, 2, "attempt numbers continue after the lost one");

    // The old owner comes back and forwards its record at epoch 1: refused, and handed over.
    old.touch(&id);
    old.flush();
    let (_, seq, records) = replicated(&mut old).remove(0);
    let (fenced, _) = adopter.keep_copies(old.local, records);
    assert_eq!(fenced.len(), 1);
    assert_eq!(fenced[0].epoch, 2);
    old.on_replicated(adopter.local, seq, Ok((fenced, Vec::new())));
    assert_eq!(old.unfinished(), 0, "the old owner no longer drives it");
    let handed = old.get(&id).unwrap();
    assert_eq!(handed.owner, adopter.local.to_string());
    assert_eq!(handed.epoch, 2);
    // Its worker's late answer to the first attempt completes nothing there.
    let first_attempt = old.entries[&id].request(&id, 1);
    answer(&mut old, w.id, &first_attempt, ok("hello"), std::slice::from_ref(&w));
    assert_ne!(old.get(&id).unwrap().state, TaskState::Completed);
    assert_eq!(old.unfinished(), 0);
    old.pump(std::slice::from_ref(&w));
    assert!(sent(&mut old).is_empty(), "never dispatched again by the old owner");
    assert_eq!(old.metrics.tasks_handed_over.get(), 1);
}

#[tokio::test]
async fn a_gateway_that_comes_back_in_time_keeps_its_tasks() {
    let owner_id = PeerId::random();
    let (mut h, copies) = holder(owner_id, &[]);
    let copy = RecordCopy {
        id: "t1".into(),
        epoch: 1,
        seq: 1,
        submitted_ms: 1,
        finished_ms: None,
        bytes: Vec::new(),
        restored: false,
    };
    let _ = h.keep_copies(owner_id, vec![copy]);
    kept(&copies, "t1").await;
    let now = Instant::now();
    h.owner_lost(owner_id, now);
    h.owner_back(&owner_id);
    assert_eq!(h.adopt_due(now + Duration::from_secs(5)), 0);
}

#[tokio::test]
async fn only_the_first_alive_holder_named_in_the_record_adopts() {
    let Owner { gw: mut old, .. } = owner(Fsync::Group, 0);
    let (mut a, copies_a) = holder(old.local, &[]);
    let (mut b, copies_b) = holder(old.local, &[]);
    a.set_members([old.local, b.local]);
    b.set_members([old.local, a.local]);
    let old_config = TasksConfig { record_copies: 2, ..config() };
    old.copies = super::super::copies::Copies::new(&old_config);
    old.set_members([a.local, b.local]);
    let w = worker(1, &[]);
    let (id, _ack) = submit_acked(&mut old, std::slice::from_ref(&w));
    let names = old.get(&id).unwrap().copies;
    assert_eq!(names.len(), 2);
    for (peer, _, records) in replicated(&mut old) {
        if peer == a.local {
            let _ = a.keep_copies(old.local, records);
        } else {
            let _ = b.keep_copies(old.local, records);
        }
    }
    kept(&copies_a, &id).await;
    kept(&copies_b, &id).await;
    let later = Instant::now() + Duration::from_secs(2);
    a.owner_lost(old.local, Instant::now());
    b.owner_lost(old.local, Instant::now());
    let adopted = a.adopt_due(later) + b.adopt_due(later);
    assert_eq!(adopted, 1, "exactly one of the two holders adopts");
    let first = if names[0] == a.local.to_string() { &a } else { &b };
    assert!(first.get(&id).is_some_and(|r| r.epoch == 2));
}

/// Carries `gw`'s effects out until none is left, with `holder` keeping every copy forwarded
/// to it at once; returns the attempts dispatched meanwhile.
fn settle(gw: &mut Gateway, holder: &mut Gateway) -> Vec<TaskRequest> {
    let mut dispatched = Vec::new();
    loop {
        let effects = gw.take_effects();
        if effects.is_empty() {
            return dispatched;
        }
        for effect in effects {
            match effect {
                Effect::Replicate { peer, tag, records } => {
                    assert_eq!(peer, holder.local);
                    let answer = holder.keep_copies(gw.local, records);
                    gw.on_replicated(peer, tag, Ok(answer));
                }
                Effect::Dispatch { request, .. } => dispatched.push(request),
                _ => {}
            }
        }
        gw.flush();
    }
}

#[tokio::test]
async fn a_gateway_back_without_its_records_takes_its_unfinished_tasks_back_from_a_holder() {
    let Owner { gw: mut old, .. } = owner(Fsync::Group, 0);
    let (mut h, copies) = holder(old.local, &[]);
    old.set_members([h.local]);
    let w = worker(4, &[]);
    let done = old.submit(echo(), std::slice::from_ref(&w)).unwrap();
    let open = old.submit(echo(), std::slice::from_ref(&w)).unwrap();
    old.flush();
    // Both run; `done` completes and its final version reaches the holder.
    let mut requests = settle(&mut old, &mut h);
    old.pump(std::slice::from_ref(&w));
    requests.extend(settle(&mut old, &mut h));
    assert_eq!(requests.len(), 2, "{requests:?}");
    let first = requests.iter().find(|r| r.task_id == done).unwrap();
    answer(&mut old, w.id, first, ok("hello"), std::slice::from_ref(&w));
    old.flush();
    settle(&mut old, &mut h);
    assert_eq!(old.get(&done).unwrap().state, TaskState::Completed);

    // The same peer id again, with a store that lost everything.
    let (log, _committed) = TaskLog::start(Store::in_memory());
    let config = TasksConfig { record_copies: 1, ..config() };
    let mut new = Gateway::new(old.local, config, Metrics::new(&mut Registry::default()), Some(log), None);
    new.set_members([h.local]);
    let (page, next) = h.kept_for(&old.local, None).unwrap().await.unwrap().unwrap();
    assert_eq!(next, None, "one page");
    assert_eq!(page.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![open.as_str()], "only the unfinished");
    assert!(copies.get(&done).unwrap().unwrap().copy.finished_ms.is_some(), "the holder has the final one");
    assert_eq!(new.reclaim(page.clone()), 1);
    assert_eq!(new.reclaim(page), 0, "a second holder's copy of the same task is not taken twice");
    assert_eq!(new.metrics.tasks_reclaimed.get(), 1);
    let record = new.get(&open).unwrap();
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.owner, old.local.to_string());
    let lost = record.attempt_history.last().unwrap();
    assert_eq!(lost.outcome, "lost", "{lost:?}");

    // Like any restored task, it asks its holder before it runs again, then runs as attempt 2.
    assert_eq!(new.confirming(), 1);
    new.flush();
    let (peer, tag, records) = replicated(&mut new).remove(0);
    assert_eq!(peer, h.local);
    assert!(records[0].restored);
    let (fenced, finals) = h.keep_copies(new.local, records);
    new.on_replicated(peer, tag, Ok((fenced, finals)));
    assert_eq!(new.confirming(), 0);
    new.pump(std::slice::from_ref(&w));
    let (to, request) = sent_one(&mut new);
    assert_eq!((to, request.task_id.as_str(), request.attempt), (w.id, open.as_str(), 2));
    assert!(new.get(&done).is_none(), "a task final at the holder is not taken back");
}

#[tokio::test]
async fn the_copies_kept_for_an_owner_come_back_in_pages() {
    let store = Store::in_memory();
    let copies = CopyLog::start(store);
    let owner = PeerId::random().to_string();
    let big = |i: usize| RecordCopy {
        id: format!("t{i:02}"),
        epoch: 1,
        seq: 1,
        submitted_ms: 1,
        finished_ms: None,
        bytes: vec![0; 200 * 1024],
        restored: false,
    };
    copies.keep(owner.clone(), (0..8).map(big).collect());
    copies.keep(PeerId::random().to_string(), vec![RecordCopy { id: "other".into(), ..big(99) }]);
    // Read by the writer after the keeps above: no wait for them to land.
    let (first, next) = copies.page_of(owner.clone(), None).await.unwrap().unwrap();
    let per_page = crate::protocol::MINE_PAGE_BYTES / (200 * 1024);
    assert_eq!(first.len(), per_page);
    assert_eq!(next.as_deref(), Some(format!("t{:02}", per_page - 1).as_str()));
    let (second, last) = copies.page_of(owner.clone(), next).await.unwrap().unwrap();
    assert_eq!(second.len(), 8 - per_page);
    assert_eq!(second[0].id, format!("t{per_page:02}"));
    assert_eq!(last, None);
    let (none, _) = copies.page_of(PeerId::random().to_string(), None).await.unwrap().unwrap();
    assert!(none.is_empty(), "nothing kept for a stranger");
}
