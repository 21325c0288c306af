//! A measurement, not a check (run with `--ignored --nocapture`): how long a late joiner's
//! ledger takes to take in 100,000 paid tasks of history, and the bytes that history is.

use std::time::Instant;

use super::*;
use crate::ledger::Ledger;

fn history(tasks_per_block: u32) -> Vec<Block> {
    let gateway = key(1);
    let mut ledger = Ledger::new(1_000_000);
    let mut blocks = Vec::new();
    for task in 0..100_000u32 {
        let worker = peer(2 + (task % 5) as u8);
        ledger.pay(worker, 1, format!("0190c3f2-7d4a-7b1e-9a3c-{task:012}")).expect("room");
        if (task + 1) % tasks_per_block == 0 {
            blocks.push(ledger.seal(&gateway).expect("covered").block);
        }
    }
    blocks
}

#[test]
#[ignore = "measurement"]
fn late_joiner_takes_in_100k_paid_tasks() {
    for tasks_per_block in [100, 10, 1] {
        let blocks = history(tasks_per_block);
        let wire: Vec<Vec<u8>> = blocks.iter().map(Block::to_bytes).collect();
        let bytes: usize = wire.iter().map(Vec::len).sum();
        let started = Instant::now();
        let mut joiner = Ledger::new(1_000_000);
        for frame in &wire {
            joiner.insert(Block::from_bytes(frame).expect("decodes")).expect("valid");
        }
        let elapsed = started.elapsed();
        assert_eq!(joiner.head(&peer(1)).seq, blocks.len() as u64);
        println!(
            "{tasks_per_block:>3} tasks/block: {} blocks, {bytes} bytes ({:.1} bytes/task), decoded, verified and inserted in {elapsed:?}",
            blocks.len(),
            bytes as f64 / 100_000.0
        );
    }
}
