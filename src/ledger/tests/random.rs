//! Seeded random interleavings: honest accounts paying each other (spending what they
//! received), their blocks delivered to each other and to a late observer in shuffled order
//! with duplicates. Every ledger must end identical, and no credit created.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;
use crate::ledger::{Inserted, Ledger};

const NODES: u8 = 5;
const INITIAL: u64 = 100;

/// Delivers one block; true if it had to wait.
fn deliver(ledger: &mut Ledger, block: Block) -> bool {
    match ledger.insert(block) {
        Ok(Inserted::Equivocation(_)) | Err(_) => panic!("an honest block was refused"),
        Ok(outcome) => matches!(outcome, Inserted::Pending(_)),
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<Keypair> = (1..=NODES).map(key).collect();
    let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut ledgers: Vec<Ledger> = (0..NODES).map(|_| Ledger::new(INITIAL)).collect();
    let mut inboxes: Vec<Vec<Block>> = vec![Vec::new(); NODES as usize];
    let mut all = Vec::new();
    let mut tasks = 0u32;

    for _ in 0..1_500 {
        let i = rng.gen_range(0..NODES as usize);
        match rng.gen_range(0..10) {
            0..=3 => {
                let j = rng.gen_range(0..NODES as usize);
                tasks += 1;
                // Now and then to itself: a task the node ran for itself.
                ledgers[i].pay(peers[j], rng.gen_range(1..=40), format!("task-{tasks}")).expect("room");
            }
            4..=5 => {
                if let Some(sealed) = ledgers[i].seal(&keys[i]) {
                    for (k, inbox) in inboxes.iter_mut().enumerate() {
                        if k != i {
                            inbox.push(sealed.block.clone());
                        }
                    }
                    all.push(sealed.block);
                }
            }
            _ => {
                for _ in 0..rng.gen_range(1..=4) {
                    if inboxes[i].is_empty() {
                        break;
                    }
                    let at = rng.gen_range(0..inboxes[i].len());
                    // Sometimes leave a copy behind: it arrives again later.
                    let block = if rng.gen_bool(0.1) { inboxes[i][at].clone() } else { inboxes[i].swap_remove(at) };
                    deliver(&mut ledgers[i], block);
                }
            }
        }
    }

    let spent_received = all.iter().filter(|b| !b.deps.is_empty()).count();
    assert!(spent_received > 10, "seed {seed}: accounts spent what they received ({spent_received} blocks)");
    assert!(all.len() > 100, "seed {seed}: {} blocks", all.len());

    for (ledger, inbox) in ledgers.iter_mut().zip(&mut inboxes) {
        inbox.shuffle(&mut rng);
        for block in inbox.drain(..) {
            deliver(ledger, block);
        }
    }
    let mut observer = Ledger::new(INITIAL);
    let mut replay: Vec<Block> =
        all.iter().flat_map(|b| std::iter::repeat_n(b.clone(), rng.gen_range(1..=2))).collect();
    replay.shuffle(&mut rng);
    let waited = replay.into_iter().filter(|block| deliver(&mut observer, block.clone())).count();
    assert!(waited > all.len() / 4, "seed {seed}: out of order ({waited} of {} waited)", all.len());

    let digest = observer.digest();
    let rows = observer.accounts();
    observer.assert_consistent();
    assert_eq!(observer.pending_blocks(), 0);
    assert_eq!(rows.iter().map(|r| r.balance).sum::<i128>(), i128::from(INITIAL) * i128::from(NODES));
    assert!(rows.iter().all(|r| r.spendable >= 0 && r.balance >= r.spendable));
    for (i, ledger) in ledgers.iter().enumerate() {
        assert_eq!(ledger.digest(), digest, "seed {seed}: node {i} agrees");
        assert_eq!(ledger.accounts(), rows, "seed {seed}: node {i} agrees");
        assert_eq!(ledger.pending_blocks(), 0);
        ledger.assert_consistent();
    }
}

#[test]
fn shuffled_delivery_with_duplicates_converges_and_conserves_credits() {
    for seed in 0..8 {
        run(seed);
    }
}
