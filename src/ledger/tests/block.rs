//! Encoding, hashing, signing, and the size per paid task.

use super::*;
use crate::ledger::{Rejected, SIGNING_DOMAIN, ZERO_HASH, account_key};

#[test]
fn encoding_round_trips_and_is_canonical() {
    let b = block(&key(1), 1, ZERO_HASH, vec![Dep { account: peer(3), seq: 7 }], &[(peer(2), 5), (peer(3), 9)]);
    let bytes = b.to_bytes();
    assert_eq!(bytes.len(), b.encoded_len());
    let back = Block::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, b);
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.hash(), b.hash());
    back.verify_signature().expect("signature holds after the round trip");
}

#[test]
fn decoding_rejects_truncation_trailing_bytes_and_bad_versions() {
    let bytes = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]).to_bytes();
    for cut in 0..bytes.len() {
        assert!(Block::from_bytes(&bytes[..cut]).is_err(), "a block cut at {cut} bytes decodes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Block::from_bytes(&longer), Err(Rejected::Malformed("trailing bytes")));
    let mut version = bytes.clone();
    version[0] = 2;
    assert_eq!(Block::from_bytes(&version), Err(Rejected::Malformed("unknown version")));
    assert_eq!(Block::from_bytes(&vec![1; crate::ledger::MAX_BLOCK_BYTES + 1]), Err(Rejected::Oversized));
}

#[test]
fn the_key_comes_from_the_account_and_the_signature_covers_every_field() {
    let signer = key(1);
    assert_eq!(account_key(&peer(1)), Some(signer.public()));
    let b = block(&signer, 2, [7; 32], vec![Dep { account: peer(2), seq: 1 }], &[(peer(2), 5)]);
    b.verify_signature().expect("valid");

    let mut altered = b.clone();
    altered.entries[0].amount = 6;
    assert_eq!(altered.verify_signature(), Err(Rejected::BadSignature));
    let mut altered = b.clone();
    altered.prev = [8; 32];
    assert_eq!(altered.verify_signature(), Err(Rejected::BadSignature));
    let mut altered = b.clone();
    altered.deps[0].seq = 2;
    assert_eq!(altered.verify_signature(), Err(Rejected::BadSignature));

    // Signed by another key than the account's.
    let mut forged = block(&key(2), 2, [7; 32], vec![], &[(peer(3), 5)]);
    forged.account = peer(1);
    assert_eq!(forged.verify_signature(), Err(Rejected::BadSignature));

    // Without the domain prefix, the same key's signature of the body is not a block's.
    let mut undomained = b.clone();
    undomained.signature = signer.sign(&b.body_bytes()).expect("signs");
    assert_eq!(undomained.verify_signature(), Err(Rejected::BadSignature));
    assert!(SIGNING_DOMAIN.ends_with(b"\0"));
}

#[test]
fn a_peer_id_without_an_embedded_key_cannot_own_an_account() {
    // `PeerId::random` is an identity multihash of random bytes: no key decodes from it.
    let mut b = block(&key(1), 1, ZERO_HASH, vec![], &[(peer(2), 5)]);
    b.account = PeerId::random();
    assert_eq!(b.verify_signature(), Err(Rejected::KeyMismatch));
}

#[test]
fn tasks_digest_depends_on_the_set_of_ids_not_their_order() {
    assert_eq!(tasks_digest(&["a", "b"]), tasks_digest(&["b", "a"]));
    assert_ne!(tasks_digest(&["a", "b"]), tasks_digest(&["ab"]));
    assert_ne!(tasks_digest(&["a"]), tasks_digest(&["a", "a"]));
}

/// Replicated growth per paid task. A block of 100 payments, encoded:
/// header 1 (version) + 39 (account) + 8 (seq) + 32 (prev) + 2 + 2 (counts) + 65 (signature)
/// = 149 bytes; each entry 39 (recipient) + 8 (amount) + 4 (task count) + 32 (task digest)
/// = 83 bytes; each dependency 39 + 8 = 47 bytes.
/// - worst case, 100 tasks to 100 different workers, with 4 dependencies:
///   149 + 100 × 83 + 4 × 47 = 8,637 bytes, 86.4 bytes per task (under 100);
/// - typical, 100 tasks to 5 workers (aggregated per recipient), 4 dependencies:
///   149 + 5 × 83 + 4 × 47 = 752 bytes, 7.5 bytes per task;
/// - but a block for a single task is 149 + 83 = 232 bytes: the bound holds only when the
///   owner seals several tasks per block (every second or every N entries): it is met from
///   3 tasks per block paid to one worker, or 9 when each goes to a different worker.
#[test]
fn growth_per_paid_task_stays_under_100_bytes() {
    let payer = key(1);
    let deps: Vec<Dep> = (10..14).map(|n| Dep { account: peer(n), seq: 1_000_000 }).collect();

    let entries: Vec<Entry> =
        (0..100u32).map(|i| entry(key_for(i).public().to_peer_id(), 3, &format!("task-{i}"))).collect();
    let worst = Block::sign(&payer, 1_000, [1; 32], deps.clone(), entries);
    assert_eq!(worst.to_bytes().len(), 149 + 100 * 83 + 4 * 47);
    assert!(worst.to_bytes().len() / 100 < 100);

    let entries: Vec<Entry> = (0..5u8)
        .map(|w| {
            let ids: Vec<String> = (0..20).map(|i| format!("task-{w}-{i}")).collect();
            Entry { to: peer(20 + w), amount: 60, tasks: 20, tasks_digest: tasks_digest(&ids) }
        })
        .collect();
    let typical = Block::sign(&payer, 1_000, [1; 32], deps, entries);
    assert_eq!(typical.to_bytes().len(), 149 + 5 * 83 + 4 * 47);
    assert!(typical.to_bytes().len() / 100 < 10);

    let single = Block::sign(&payer, 1_000, [1; 32], vec![], vec![entry(peer(20), 1, "task")]);
    assert_eq!(single.to_bytes().len(), 149 + 83);
}

fn key_for(i: u32) -> Keypair {
    let mut seed = [0x5a; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Keypair::ed25519_from_bytes(seed).expect("32 bytes are an ed25519 secret")
}
