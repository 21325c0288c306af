//! Equivocation: detection, a proof anyone can check alone, and the freeze it brings.

use super::*;
use crate::ledger::{EquivocationProof, Inserted, Ledger, ProofError, Rejected, ZERO_HASH};

/// Account 1's block 1, then two different blocks 2 (paying 2 or paying 3), and a block 3
/// after the first branch.
fn fork() -> (Block, Block, Block, Block) {
    let a1 = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 10)]);
    let a2 = block(&key(1), 2, a1.hash(), vec![], &[(peer(2), 20)]);
    let a2_other = block(&key(1), 2, a1.hash(), vec![], &[(peer(3), 20)]);
    let a3 = block(&key(1), 3, a2.hash(), vec![], &[(peer(2), 30)]);
    (a1, a2, a2_other, a3)
}

fn proof_of(outcome: Result<Inserted, Rejected>) -> EquivocationProof {
    match outcome {
        Ok(Inserted::Equivocation(proof)) => *proof,
        other => panic!("expected an equivocation, got {other:?}"),
    }
}

#[test]
fn a_second_block_at_a_held_seq_freezes_the_account_from_there() {
    let (a1, a2, a2_other, a3) = fork();
    let mut l = Ledger::new(100);
    for b in [&a1, &a2, &a3] {
        l.insert(b.clone()).expect("valid");
    }
    assert_eq!(l.balance(&peer(1)), 40);
    let proof = proof_of(l.insert(a2_other.clone()));
    assert_eq!(proof.verify(), Ok((peer(1), 2)));
    assert_eq!(proof, EquivocationProof::new(a2_other, a2), "the pair is ordered canonically");

    let row = l.row(&peer(1));
    assert_eq!((row.seq, row.frozen_from, row.balance), (1, Some(2), 90), "frozen at the block before the fork");
    assert_eq!(l.balance(&peer(2)), 110, "payments in voided blocks are void");
    assert_eq!(l.balance(&peer(3)), 100);
    assert_eq!(l.insert(a3), Err(Rejected::Frozen { from: 2 }));
    assert_eq!(l.proofs().count(), 1);
    assert!(l.missing_ranges(&[(peer(1), 9)]).is_empty(), "nothing past the fork is fetched");
    l.assert_consistent();
}

#[test]
fn the_proof_is_checked_alone_and_brings_every_ledger_to_the_same_state() {
    let (a1, a2, a2_other, a3) = fork();
    let mut saw_first = Ledger::new(100);
    let mut saw_second = Ledger::new(100);
    for b in [&a1, &a2, &a3] {
        saw_first.insert(b.clone()).expect("valid");
    }
    for b in [&a1, &a2_other] {
        saw_second.insert(b.clone()).expect("valid");
    }
    let proof = proof_of(saw_second.insert(a2.clone()));

    // Gossiped as bytes, decoded and checked by a node that never saw either block.
    let wire = EquivocationProof::from_bytes(&proof.to_bytes()).expect("decodes");
    assert_eq!(wire, proof);
    assert_eq!(wire.verify(), Ok((peer(1), 2)));
    assert_eq!(saw_first.apply_proof(wire.clone()), Ok(true));
    assert_eq!(saw_first.apply_proof(wire.clone()), Ok(false), "already frozen");
    assert_eq!(saw_first.digest(), saw_second.digest());
    assert_eq!(saw_first.accounts(), saw_second.accounts());

    let mut bystander = Ledger::new(100);
    assert_eq!(bystander.apply_proof(wire), Ok(true));
    assert_eq!(bystander.row(&peer(1)).frozen_from, Some(2));
    bystander.insert(a1).expect("blocks before the fork still go in");
    assert_eq!(bystander.digest(), saw_first.digest());
}

#[test]
fn proofs_that_prove_nothing_are_refused() {
    let (a1, a2, a2_other, _) = fork();
    let b2 = block(&key(2), 2, a1.hash(), vec![], &[(peer(3), 20)]);
    let refused = |a: &Block, b: &Block| EquivocationProof { a: a.clone(), b: b.clone() }.verify();
    assert_eq!(refused(&a2, &b2), Err(ProofError::DifferentAccounts));
    assert_eq!(refused(&a1, &a2), Err(ProofError::DifferentSeq));
    assert_eq!(refused(&a2, &a2), Err(ProofError::Identical));
    let mut forged = a2_other.clone();
    forged.entries[0].amount = 1;
    assert_eq!(refused(&a2, &forged), Err(ProofError::InvalidBlock(Rejected::BadSignature)));
    let mut ledger = Ledger::new(100);
    assert_eq!(
        ledger.apply_proof(EquivocationProof { a: a2.clone(), b: forged }),
        Err(ProofError::InvalidBlock(Rejected::BadSignature))
    );
    assert!(ledger.proofs().next().is_none());
    assert!(EquivocationProof::from_bytes(&[0, 0, 0, 9, 1]).is_err());
}

#[test]
fn an_equivocation_is_caught_in_the_pending_pool_too() {
    let (_, a2, a2_other, _) = fork();
    let mut l = Ledger::new(100);
    assert!(matches!(l.insert(a2), Ok(Inserted::Pending(_))));
    let proof = proof_of(l.insert(a2_other));
    assert_eq!(proof.seq(), 2);
    assert_eq!(l.pending_blocks(), 0, "the pending branch is void");
}

#[test]
fn an_earlier_fork_moves_the_freeze_back() {
    let (a1, a2, a2_other, a3) = fork();
    let a3_other = block(&key(1), 3, a2.hash(), vec![], &[(peer(3), 30)]);
    let mut l = Ledger::new(100);
    assert_eq!(l.apply_proof(EquivocationProof::new(a3.clone(), a3_other)), Ok(true));
    for b in [&a1, &a2] {
        l.insert(b.clone()).expect("before the fork");
    }
    assert_eq!(l.row(&peer(1)).frozen_from, Some(3));
    assert_eq!(l.apply_proof(EquivocationProof::new(a2, a2_other)), Ok(true));
    assert_eq!((l.row(&peer(1)).frozen_from, l.head(&peer(1)).seq), (Some(2), 1));
    l.assert_consistent();
}

#[test]
fn credits_spent_from_a_voided_block_leave_the_spender_short_but_none_are_created() {
    let (a1, a2, a2_other, _) = fork();
    // Account 2 acknowledged both payments (10 + 20) and spent all it held, 130.
    let b1 = block(&key(2), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 2 }], &[(peer(4), 130)]);
    let mut l = Ledger::new(100);
    for b in [&a1, &a2, &b1] {
        l.insert(b.clone()).expect("valid");
    }
    assert_eq!(l.balance(&peer(2)), 0);
    proof_of(l.insert(a2_other));
    assert_eq!((l.balance(&peer(2)), l.spendable(&peer(2))), (-20, -20));
    assert_eq!(l.balance(&peer(4)), 230, "what was paid on stays paid");
    l.assert_consistent();

    // A dependency past the fork now counts only up to the block before it.
    let c1 = block(&key(3), 1, ZERO_HASH, vec![Dep { account: peer(1), seq: 5 }], &[(peer(4), 1)]);
    assert!(matches!(l.insert(c1), Ok(Inserted::Accepted { .. })));
    l.assert_consistent();
}
