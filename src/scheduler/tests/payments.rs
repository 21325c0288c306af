//! What completed tasks pay (`scheduler::payment`): verified work is paid to its worker and
//! recorded with how it was verified; unverifiable work is not paid unless allowed; an output
//! that is not its input earns an echo nothing; `enforce` refuses what the funds cannot cover.

use std::sync::Arc;

use super::*;
use crate::config::LedgerSettings;
use crate::scheduler::payment::{Funds, Pricing};

struct Fixed(i128);

impl Funds for Fixed {
    fn available(&self) -> i128 {
        self.0
    }
}

fn priced(settings: LedgerSettings, funds: i128) -> Gateway {
    let mut gw = gateway();
    gw.set_pricing(Pricing::new(&settings, 1_000_000, Arc::new(Fixed(funds))));
    gw
}

fn pays(gw: &mut Gateway) -> Vec<(String, Vec<(PeerId, u64)>)> {
    gw.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Pay { task, payments } => Some((task, payments)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn verified_work_is_paid_to_its_worker_and_the_record_says_how() {
    let mut gw = priced(LedgerSettings::default(), 0);
    let workers = [worker(4, &["compute"])];
    let id = gw.submit(spec("echo", "hello"), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok("hello"), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    let payment = record.payment.expect("a completed task records its payment");
    assert_eq!(payment.verified_by.as_deref(), Some("echo: the output equals the input"));
    assert_eq!(payment.paid.len(), 1);
    assert_eq!(payment.paid[0].worker, peer.to_string());
    assert_eq!(pays(&mut gw), vec![(id, vec![(peer, 1)])]);

    let id = gw.submit(spec("compute", "blk"), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok(&proof("blk", 4)), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    assert_eq!(pays(&mut gw), vec![(id, vec![(peer, 10)])]);
}

#[tokio::test(start_paused = true)]
async fn unverifiable_or_wrong_work_earns_nothing_unless_allowed() {
    let mut gw = priced(LedgerSettings::default(), 0);
    let workers = [worker(4, &["compute"])];
    // An echo that did not echo completes (echo has no retry on content) but is not paid.
    let id = gw.submit(spec("echo", "hello"), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok("HELLO"), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    let payment = record.payment.unwrap();
    assert_eq!(payment.verified_by, None);
    assert!(payment.paid.is_empty() && payment.reason.contains("pay_unverified is off"), "{payment:?}");
    let id = gw.submit(spec("sleep", "1"), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok("slept"), &workers);
    assert_final(&gw, &id, TaskState::Completed);
    assert!(pays(&mut gw).is_empty());

    let mut gw = priced(LedgerSettings { pay_unverified: true, ..LedgerSettings::default() }, 0);
    let id = gw.submit(spec("sleep", "1"), &workers).unwrap();
    let (peer, request) = sent_one(&mut gw);
    answer(&mut gw, peer, &request, ok("slept"), &workers);
    let record = assert_final(&gw, &id, TaskState::Completed);
    assert!(record.payment.unwrap().reason.contains("pay_unverified is on"));
    assert_eq!(pays(&mut gw), vec![(id, vec![(peer, 1)])]);
}

#[tokio::test(start_paused = true)]
async fn enforce_refuses_what_the_funds_cannot_cover_and_names_both() {
    let settings = LedgerSettings { enforce: true, ..LedgerSettings::default() };
    let workers = [worker(4, &["compute"])];
    let mut gw = priced(settings.clone(), 9);
    let e = gw.submit(spec("compute", "x"), &workers).unwrap_err();
    assert_eq!(e, SubmitError::InsufficientCredits { available: 9, price: 10 });
    assert!(e.to_string().contains("9 credits") && e.to_string().contains("up to 10"), "{e}");
    assert_eq!(reason(&gw.metrics.tasks_rejected, "insufficient_credits"), 1);
    // Work that earns nothing costs nothing; a batch is priced whole.
    gw.submit(spec("sleep", "1"), &workers).unwrap();
    let batch = vec![spec("echo", "a"); 10];
    assert!(matches!(gw.submit_batch(batch, &workers), Err((0, SubmitError::InsufficientCredits { price: 10, .. }))));
    let mut gw = priced(settings, 10);
    gw.submit(spec("compute", "x"), &workers).unwrap();
}

#[tokio::test(start_paused = true)]
async fn enforce_holds_back_the_price_of_tasks_still_running() {
    let settings = LedgerSettings { enforce: true, ..LedgerSettings::default() };
    let workers = [worker(4, &["compute"])];
    let mut gw = priced(settings, 25);
    let first = gw.submit(spec("compute", "a"), &workers).unwrap();
    gw.submit(spec("compute", "b"), &workers).unwrap();
    // 25, less the two running tasks' 10 each, leaves 5.
    let e = gw.submit(spec("compute", "c"), &workers).unwrap_err();
    assert_eq!(e, SubmitError::InsufficientCredits { available: 5, price: 10 });
    let effects = sent(&mut gw);
    let (peer, request) = effects.iter().find(|(_, r)| r.task_id == first).cloned().unwrap();
    answer(&mut gw, peer, &request, ok(&proof("a", 4)), &workers);
    assert_final(&gw, &first, TaskState::Completed);
    // The finished task's reservation is given back (what it paid is the ledger's to count).
    gw.submit(spec("compute", "c"), &workers).unwrap();
    let e = gw.cancel(&gw.list(10).iter().find(|r| r.payload == "b").unwrap().id.clone());
    assert!(e.is_ok());
    gw.submit(spec("compute", "d"), &workers).unwrap();
}
