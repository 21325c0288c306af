//! The state machine: balances, out-of-order delivery, dependency ordering, anti-entropy
//! views, and the owner's pay and seal.

use super::*;
use crate::ledger::{BlockId, Inserted, Ledger, LedgerConfig, PayError, Wait, ZERO_HASH};

/// A chain of `n` blocks of account `from`, each paying `to` `amount`.
fn chain(from: u8, to: u8, n: u64, amount: u64) -> Vec<Block> {
    let mut prev = ZERO_HASH;
    (1..=n)
        .map(|seq| {
            let b = block(&key(from), seq, prev, vec![], &[(peer(to), amount)]);
            prev = b.hash();
            b
        })
        .collect()
}

#[test]
fn balances_follow_the_payments() {
    let mut l = Ledger::new(100);
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 30), (peer(3), 20)]);
    l.insert(a1).expect("valid");
    assert_eq!(l.balance(&peer(1)), 50);
    assert_eq!(l.balance(&peer(2)), 130);
    assert_eq!(l.balance(&peer(3)), 120);
    assert_eq!(l.balance(&peer(9)), 100, "an account never seen holds the initial credits");
    let rows = l.accounts();
    assert_eq!(rows.len(), 3);
    let a = rows.iter().find(|r| r.peer == peer(1)).expect("listed");
    assert_eq!((a.balance, a.spendable, a.seq, a.frozen_from), (50, 50, 1, None));
    let b = rows.iter().find(|r| r.peer == peer(2)).expect("listed");
    assert_eq!((b.balance, b.spendable, b.seq), (130, 100, 0));
    l.assert_consistent();
}

#[test]
fn blocks_delivered_backwards_wait_and_are_released_in_order() {
    let blocks = chain(1, 2, 4, 5);
    let mut l = Ledger::new(100);
    for b in blocks[1..].iter().rev() {
        assert!(matches!(l.insert(b.clone()), Ok(Inserted::Pending(Wait::Gap { head: 0 }))));
    }
    let ids: Vec<BlockId> = blocks[1..].iter().map(Block::id).collect();
    assert_eq!(l.insert(blocks[0].clone()), Ok(Inserted::Accepted { released: ids, dropped: vec![] }));
    assert_eq!(l.head(&peer(1)).seq, 4);
    assert_eq!(l.pending_blocks(), 0);
    assert_eq!(l.balance(&peer(2)), 120);
    l.assert_consistent();
}

#[test]
fn a_block_waits_for_the_dependency_it_names_not_just_any_block() {
    let a = chain(1, 2, 2, 40);
    let b1 = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 2 }], &[(peer(3), 170)]);
    let mut l = Ledger::new(100);
    assert_eq!(l.insert(b1.clone()), Ok(Inserted::Pending(Wait::Dependency { account: peer(1), seq: 2 })));
    assert_eq!(l.wanted(), vec![(peer(1), 1, 2)]);
    assert_eq!(l.insert(a[0].clone()), Ok(Inserted::Accepted { released: vec![], dropped: vec![] }));
    assert_eq!(l.insert(a[1].clone()), Ok(Inserted::Accepted { released: vec![b1.id()], dropped: vec![] }));
    assert_eq!(l.balance(&peer(2)), 10);
    assert_eq!(l.balance(&peer(3)), 270);
    assert!(l.wanted().is_empty());
    l.assert_consistent();
}

#[test]
fn a_released_block_that_turns_out_invalid_is_reported_dropped() {
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 10)]);
    // Acknowledges 10 credits but spends 111: an overspend once its dependency is there.
    let b1 = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 1 }], &[(peer(3), 111)]);
    let mut l = Ledger::new(100);
    assert!(matches!(l.insert(b1.clone()), Ok(Inserted::Pending(_))));
    let outcome = l.insert(a1).expect("valid");
    let dropped = vec![(b1.id(), crate::ledger::Rejected::Overspend { spendable: -1 })];
    assert_eq!(outcome, Inserted::Accepted { released: vec![], dropped });
    assert_eq!(l.pending_blocks(), 0);
}

#[test]
fn equal_sets_of_blocks_give_equal_digests_whatever_the_order() {
    let mut blocks = chain(1, 2, 3, 5);
    blocks.extend(chain(3, 1, 2, 7));
    let mut forward = Ledger::new(100);
    let mut backward = Ledger::new(100);
    for b in &blocks {
        forward.insert(b.clone()).expect("valid");
    }
    for b in blocks.iter().rev() {
        backward.insert(b.clone()).expect("valid or pending");
    }
    assert_eq!(forward.digest(), backward.digest());
    assert_eq!(forward.accounts(), backward.accounts());
    let mut shorter = Ledger::new(100);
    for b in &blocks[..4] {
        shorter.insert(b.clone()).expect("valid");
    }
    assert_ne!(shorter.digest(), forward.digest());
    assert_ne!(Ledger::new(100).digest(), forward.digest());
}

#[test]
fn missing_ranges_and_served_blocks_close_the_gap() {
    let blocks = chain(1, 2, 5, 1);
    let mut full = Ledger::new(100);
    for b in &blocks {
        full.insert(b.clone()).expect("valid");
    }
    let mut late = Ledger::new(100);
    late.insert(blocks[0].clone()).expect("valid");
    let ranges = late.missing_ranges(&full.heads());
    assert_eq!(ranges, vec![(peer(1), 2, 5)]);
    for (peer, from, to) in ranges {
        for b in full.blocks(&peer, from, to) {
            late.insert(b).expect("valid");
        }
    }
    assert_eq!(late.digest(), full.digest());
    assert!(late.missing_ranges(&full.heads()).is_empty());
    assert!(full.missing_ranges(&[(peer(1), 3)]).is_empty(), "behind us: nothing to fetch");
    assert_eq!(full.blocks(&peer(1), 0, 2).len(), 2, "seq 0 reads from the first block");
    assert!(full.blocks(&peer(1), 6, 9).is_empty());
    assert!(full.blocks(&peer(7), 1, 9).is_empty());
    assert_eq!(full.block(&peer(1), 5), Some(&blocks[4]));
    assert_eq!(full.block(&peer(1), 0), None);
}

#[test]
fn seal_aggregates_payments_per_recipient() {
    let me = key(1);
    let mut l = Ledger::new(100);
    for (to, task) in [(2, "a"), (3, "b"), (2, "c"), (2, "d")] {
        l.pay(peer(to), 5, task).expect("room");
    }
    let sealed = l.seal(&me).expect("covered");
    assert_eq!(sealed.block.seq, 1);
    assert_eq!(sealed.block.entries.len(), 2);
    let to_2 = sealed.block.entries.iter().position(|e| e.to == peer(2)).expect("paid");
    let entry = &sealed.block.entries[to_2];
    assert_eq!((entry.amount, entry.tasks), (15, 3));
    assert_eq!(entry.tasks_digest, tasks_digest(&["d", "a", "c"]));
    assert_eq!(sealed.tasks[to_2], vec!["a", "c", "d"]);
    assert_eq!(l.head(&peer(1)).seq, 1, "the sealed block is in the ledger");
    assert_eq!(l.balance(&peer(1)), 80);
    assert_eq!(l.pending_payments(), 0);
    assert_eq!(l.seal(&me), None, "nothing left to seal");

    let mut other = Ledger::new(100);
    assert!(matches!(other.insert(sealed.block), Ok(Inserted::Accepted { .. })));
    assert_eq!(other.digest(), l.digest());
}

#[test]
fn seal_acknowledges_what_was_received_and_spends_it() {
    let mut l = Ledger::new(100);
    let incoming = chain(2, 1, 3, 20);
    for b in &incoming {
        l.insert(b.clone()).expect("valid");
    }
    l.pay(peer(3), 150, "big").expect("room");
    let sealed = l.seal(&key(1)).expect("covered once the incoming 60 are acknowledged");
    assert_eq!(sealed.block.deps, vec![Dep { account: peer(2), seq: 3 }]);
    assert_eq!((l.balance(&peer(1)), l.spendable(&peer(1))), (10, 10));
    l.assert_consistent();
}

#[test]
fn seal_stops_at_the_first_payment_not_covered_and_keeps_the_rest() {
    let mut l = Ledger::new(100);
    l.pay(peer(2), 60, "a").expect("room");
    l.pay(peer(3), 60, "b").expect("room");
    l.pay(peer(4), 10, "c").expect("room");
    l.pay(peer(1), 10, "to myself").expect("room");
    let sealed = l.seal(&key(1)).expect("the first is covered");
    assert_eq!(sealed.tasks, vec![vec!["a".to_string()]]);
    assert_eq!(l.pending_payments(), 2, "the self-payment was dropped, b and c wait");
    assert_eq!(l.seal(&key(1)), None, "b is still not covered");

    assert_eq!(l.pay(peer(2), 0, "zero"), Err(PayError::ZeroAmount));
    let mut tiny = Ledger::with_config(LedgerConfig { max_pending_payments: 1, ..LedgerConfig::default() });
    tiny.pay(peer(2), 1, "a").expect("room");
    assert_eq!(tiny.pay(peer(2), 1, "b"), Err(PayError::Full));
}
