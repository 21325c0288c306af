//! The ledger on the wire: what its GossipSub topic carries, and the anti-entropy protocol's
//! frames.
//!
//! Gossip: one byte naming the kind (block, equivocation proof), then its encoding. Blocks
//! and proofs carry their authors' signatures, so a gossip message needs no envelope of its
//! own: any node may forward (or republish) them unchanged.
//!
//! Anti-entropy (`/<protocol_version>/ledger/1.0.0`, one stream per round): request/response
//! pairs, each a frame of a 4-byte big-endian length and CBOR, at most [`MAX_FRAME`] bytes.
//! The asking node sends the digest of its heads; the other answers `Same`, or its heads;
//! then the asker fetches the ranges it lacks and the proofs of freezes it has not seen.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::block::{Block, Hash};
use super::equivocation::EquivocationProof;
use super::validate::Rejected;

const BLOCK: u8 = 0;
const PROOF: u8 = 1;

/// The frames anti-entropy speaks in (a range answer stops adding blocks before `MAX_FRAME`).
pub use crate::network::frames::{MAX_FRAME, read_frame, write_frame};
/// Most accounts one heads answer lists.
pub const MAX_HEADS: usize = 100_000;

/// A ledger gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossiped {
    Block(Block),
    Proof(Box<EquivocationProof>),
}

impl Gossiped {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Gossiped::Block(b) => (BLOCK, b.to_bytes()),
            Gossiped::Proof(p) => (PROOF, p.to_bytes()),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(kind);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a message and checks what it can alone: a block's signature, a proof's two
    /// blocks. What needs the ledger (sequence, previous hash, balance) is checked when it is
    /// inserted.
    pub fn open(data: &[u8]) -> Result<Gossiped, Rejected> {
        let (&kind, body) = data.split_first().ok_or(Rejected::Malformed("empty message"))?;
        match kind {
            BLOCK => {
                let block = Block::from_bytes(body)?;
                block.verify_signature()?;
                Ok(Gossiped::Block(block))
            }
            PROOF => {
                let proof = EquivocationProof::from_bytes(body)?;
                proof.verify().map_err(|_| Rejected::BadSignature)?;
                Ok(Gossiped::Proof(Box::new(proof)))
            }
            _ => Err(Rejected::Malformed("unknown message kind")),
        }
    }
}

/// What the asking side of a round sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "This is the digest of my heads": answered `Same` or `Heads`.
    Heads { digest: ByteBuf },
    /// Blocks `from..=to` of `account` (answered with as many as fit, from `from` on).
    Range { account: ByteBuf, from: u64, to: u64 },
    /// The equivocation proofs of these accounts.
    Proofs { accounts: Vec<ByteBuf> },
}

/// An account's head as the answering side holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHead {
    pub account: ByteBuf,
    pub seq: u64,
    /// The seq it was frozen from; 0: not frozen.
    pub frozen_from: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    Same,
    Heads(Vec<WireHead>),
    Blocks(Vec<ByteBuf>),
    Proofs(Vec<ByteBuf>),
}

pub fn digest_bytes(digest: &Hash) -> ByteBuf {
    ByteBuf::from(digest.to_vec())
}

pub fn peer_bytes(peer: &PeerId) -> ByteBuf {
    ByteBuf::from(peer.to_bytes())
}

pub fn peer_from(bytes: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::ledger::{Entry, ZERO_HASH};

    fn block(key: &Keypair, amount: u64) -> Block {
        let to = Keypair::generate_ed25519().public().to_peer_id();
        Block::sign(key, 1, ZERO_HASH, vec![], vec![Entry { to, amount, tasks: 1, tasks_digest: [0; 32] }])
    }

    #[test]
    fn gossip_opens_what_was_encoded_and_refuses_forgeries() {
        let key = Keypair::generate_ed25519();
        let b = block(&key, 5);
        assert_eq!(Gossiped::open(&Gossiped::Block(b.clone()).encode()).unwrap(), Gossiped::Block(b.clone()));
        let proof = EquivocationProof::new(b.clone(), block(&key, 6));
        let msg = Gossiped::Proof(Box::new(proof));
        assert_eq!(Gossiped::open(&msg.encode()).unwrap(), msg);

        let mut forged = b.clone();
        forged.entries[0].amount = 500;
        assert_eq!(Gossiped::open(&Gossiped::Block(forged).encode()), Err(Rejected::BadSignature));
        assert!(matches!(Gossiped::open(&[]), Err(Rejected::Malformed(_))));
        assert!(matches!(Gossiped::open(&[9, 1, 2]), Err(Rejected::Malformed(_))));
        let mut truncated = Gossiped::Block(b).encode();
        truncated.pop();
        assert!(Gossiped::open(&truncated).is_err());
        // A "proof" of one block twice proves nothing.
        let same = block(&key, 7);
        let bogus = Gossiped::Proof(Box::new(EquivocationProof { a: same.clone(), b: same }));
        assert!(Gossiped::open(&bogus.encode()).is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let request = SyncRequest::Range { account: ByteBuf::from(vec![1, 2]), from: 3, to: 9 };
        let mut buf = futures::io::Cursor::new(Vec::new());
        write_frame(&mut buf, &request).await.unwrap();
        buf.set_position(0);
        assert_eq!(read_frame::<_, SyncRequest>(&mut buf).await.unwrap(), Some(request));
        assert_eq!(read_frame::<_, SyncRequest>(&mut buf).await.unwrap(), None);
        let mut huge = futures::io::Cursor::new(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(read_frame::<_, SyncRequest>(&mut huge).await.is_err());
    }
}
