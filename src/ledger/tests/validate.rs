//! One test per validation rule, each asserting its typed reason.

use super::*;
use crate::ledger::{Inserted, Ledger, LedgerConfig, MAX_DEPS, MAX_ENTRIES, Rejected, Wait, ZERO_HASH};

fn ledger() -> Ledger {
    Ledger::new(100)
}

#[test]
fn a_tampered_block_has_a_bad_signature() {
    let mut b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]);
    b.entries[0].amount = 50;
    assert_eq!(ledger().insert(b), Err(Rejected::BadSignature));
}

#[test]
fn an_account_without_an_embedded_key_is_a_key_mismatch() {
    let mut b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]);
    b.account = PeerId::random();
    assert_eq!(ledger().insert(b), Err(Rejected::KeyMismatch));
}

#[test]
fn a_gap_waits_in_the_pending_pool() {
    let mut l = ledger();
    let b2 = block(&key(1), 2, [9; 32], vec![], &[(peer(2), 5)]);
    assert_eq!(l.insert(b2), Ok(Inserted::Pending(Wait::Gap { head: 0 })));
    assert_eq!(l.pending_blocks(), 1);
    assert_eq!(l.head(&peer(1)).seq, 0);
}

#[test]
fn a_wrong_previous_hash_is_rejected() {
    let mut l = ledger();
    let first = block(&key(1), 1, [1; 32], vec![], &[(peer(2), 5)]);
    assert_eq!(l.insert(first), Err(Rejected::WrongPrev), "seq 1 must follow the zero hash");
    let b1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]);
    l.insert(b1).expect("valid");
    let b2 = block(&key(1), 2, [1; 32], vec![], &[(peer(2), 5)]);
    assert_eq!(l.insert(b2), Err(Rejected::WrongPrev));
    assert_eq!(Rejected::WrongPrev.label(), "wrong_prev");
}

#[test]
fn a_replay_is_a_duplicate_and_changes_nothing() {
    let mut l = ledger();
    let b1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]);
    let b2 = block(&key(1), 2, b1.hash(), vec![], &[(peer(2), 5)]);
    l.insert(b1.clone()).expect("valid");
    l.insert(b2.clone()).expect("valid");
    let digest = l.digest();
    assert_eq!(l.insert(b1), Ok(Inserted::Duplicate));
    assert_eq!(l.insert(b2.clone()), Ok(Inserted::Duplicate));
    // A copy is recognised by its body before the signature is checked: a copy with a
    // broken signature changes nothing either.
    let mut broken = b2;
    broken.signature[0] ^= 1;
    assert_eq!(l.insert(broken), Ok(Inserted::Duplicate));
    assert_eq!(l.digest(), digest);
    assert_eq!(l.balance(&peer(2)), 110);
    // A replay of a pending block is a duplicate too.
    let b4 = block(&key(1), 4, [4; 32], vec![], &[(peer(2), 5)]);
    assert!(matches!(l.insert(b4.clone()), Ok(Inserted::Pending(_))));
    assert_eq!(l.insert(b4), Ok(Inserted::Duplicate));
}

#[test]
fn a_missing_dependency_waits() {
    let mut l = ledger();
    let b = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 3 }], &[(peer(3), 5)]);
    assert_eq!(l.insert(b), Ok(Inserted::Pending(Wait::Dependency { account: peer(1), seq: 3 })));
}

#[test]
fn spending_more_than_held_is_an_overspend() {
    let mut l = ledger();
    let b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 60), (peer(3), 41)]);
    assert_eq!(l.insert(b), Err(Rejected::Overspend { spendable: -1 }));
    let exact = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 60), (peer(3), 40)]);
    l.insert(exact).expect("spending everything is allowed");
    assert_eq!(l.balance(&peer(1)), 0);
}

#[test]
fn credits_received_are_spendable_only_once_acknowledged() {
    let mut l = ledger();
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 50)]);
    l.insert(a1).expect("valid");
    assert_eq!((l.balance(&peer(2)), l.spendable(&peer(2))), (150, 100));
    let unacked = block(&key(2), 1, ZERO_HASH, vec![], &[(peer(3), 120)]);
    assert_eq!(l.insert(unacked), Err(Rejected::Overspend { spendable: -20 }));
    let acked = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 1 }], &[(peer(3), 120)]);
    l.insert(acked).expect("the acknowledged credits cover it");
    assert_eq!((l.balance(&peer(2)), l.spendable(&peer(2))), (30, 30));
}

#[test]
fn too_many_entries_or_dependencies_is_oversized() {
    let payments: Vec<(PeerId, u64)> = (0..=MAX_ENTRIES).map(|_| (peer(2), 1)).collect();
    assert_eq!(ledger().insert(block(&key(1), 1, ZERO_HASH, vec![], &payments)), Err(Rejected::Oversized));
    let deps: Vec<Dep> = (0..=MAX_DEPS).map(|_| Dep { account: PeerId::random(), seq: 1 }).collect();
    assert_eq!(ledger().insert(block(&key(1), 1, ZERO_HASH, deps, &[(peer(2), 1)])), Err(Rejected::Oversized));
}

#[test]
fn impossible_fields_are_malformed() {
    let seq0 = block(&key(1), 0, ZERO_HASH, vec![], &[(peer(2), 1)]);
    assert_eq!(ledger().insert(seq0), Err(Rejected::Malformed("seq 0")));
    let empty = block(&key(1), 1, ZERO_HASH, vec![], &[]);
    assert_eq!(ledger().insert(empty), Err(Rejected::Malformed("empty block")));
    let overflow = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), u64::MAX), (peer(3), 1)]);
    assert_eq!(ledger().insert(overflow), Err(Rejected::Malformed("amounts overflow")));
}

#[test]
fn a_payment_to_oneself_is_rejected() {
    let b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(1), 5)]);
    assert_eq!(ledger().insert(b), Err(Rejected::SelfPayment));
}

#[test]
fn a_payment_of_zero_is_rejected() {
    let b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 0)]);
    assert_eq!(ledger().insert(b), Err(Rejected::ZeroAmount));
}

#[test]
fn dependencies_must_name_others_once_and_move_forward() {
    let on_self = block(&key(1), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 1 }], &[(peer(2), 1)]);
    assert_eq!(ledger().insert(on_self), Err(Rejected::BadDependency("on its own account")));
    let twice = vec![Dep { account: peer(2), seq: 1 }, Dep { account: peer(2), seq: 2 }];
    let twice = block(&key(1), 1, ZERO_HASH, twice, &[(peer(2), 1)]);
    assert_eq!(ledger().insert(twice), Err(Rejected::BadDependency("one account twice")));

    let mut l = ledger();
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 10)]);
    l.insert(a1).expect("valid");
    let b1 = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 1 }], &[(peer(3), 1)]);
    l.insert(b1.clone()).expect("valid");
    let again = block(&key(2), 2, b1.hash(), vec![Dep { account: peer(1), seq: 1 }], &[(peer(3), 1)]);
    assert_eq!(l.insert(again), Err(Rejected::BadDependency("not beyond its previous acknowledgement")));
}

#[test]
fn blocks_of_a_frozen_account_from_its_fork_on_are_rejected() {
    let mut l = ledger();
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 10)]);
    let a1_other = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(3), 10)]);
    l.insert(a1.clone()).expect("valid");
    assert!(matches!(l.insert(a1_other), Ok(Inserted::Equivocation(_))));
    let a2 = block(&key(1), 2, a1.hash(), vec![], &[(peer(2), 10)]);
    assert_eq!(l.insert(a2), Err(Rejected::Frozen { from: 1 }));
    assert!(!Rejected::Frozen { from: 1 }.blames_sender());
}

#[test]
fn the_pending_pool_is_bounded() {
    let config = LedgerConfig { max_pending_blocks: 3, max_pending_per_account: 2, ..LedgerConfig::default() };
    let mut l = Ledger::with_config(config);
    for seq in [3, 4] {
        assert!(matches!(l.insert(block(&key(1), seq, [1; 32], vec![], &[(peer(2), 1)])), Ok(Inserted::Pending(_))));
    }
    let third = block(&key(1), 5, [1; 32], vec![], &[(peer(2), 1)]);
    assert_eq!(l.insert(third), Err(Rejected::PendingFull), "per account");
    assert!(matches!(l.insert(block(&key(2), 3, [1; 32], vec![], &[(peer(1), 1)])), Ok(Inserted::Pending(_))));
    let fourth = block(&key(3), 3, [1; 32], vec![], &[(peer(1), 1)]);
    assert_eq!(l.insert(fourth), Err(Rejected::PendingFull), "in all");
    assert_eq!(l.pending_blocks(), 3);
}

#[test]
fn every_reason_has_its_own_label() {
    let reasons = [
        Rejected::Malformed("x"),
        Rejected::Oversized,
        Rejected::KeyMismatch,
        Rejected::BadSignature,
        Rejected::WrongPrev,
        Rejected::Overspend { spendable: -1 },
        Rejected::SelfPayment,
        Rejected::ZeroAmount,
        Rejected::BadDependency("x"),
        Rejected::Frozen { from: 1 },
        Rejected::PendingFull,
    ];
    let labels: std::collections::BTreeSet<&str> = reasons.iter().map(Rejected::label).collect();
    assert_eq!(labels.len(), reasons.len());
}
