//! Equivocation: two different, validly signed blocks from one account at one sequence
//! number. Only the account's key can sign, so the pair proves that the owner forked its
//! own chain, and anyone can check the proof alone, without any ledger.
//!
//! The consequence (applied by `state`): the account is frozen from that sequence number.
//! Its blocks from there on are void, for every node alike whichever branch it saw first,
//! and its balance stays what its blocks before the fork make it. An honest node never signs
//! two blocks at one seq: its chain is in its durable store before a block leaves it.

use libp2p::PeerId;
use thiserror::Error;

use super::block::Block;
use super::validate::{Rejected, check_shape};

/// Both blocks, as signed by the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationProof {
    pub a: Block,
    pub b: Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    #[error("the two blocks are from different accounts")]
    DifferentAccounts,
    #[error("the two blocks are at different sequence numbers")]
    DifferentSeq,
    #[error("the two blocks are the same block")]
    Identical,
    #[error("a block of the proof is invalid: {0}")]
    InvalidBlock(Rejected),
}

impl EquivocationProof {
    /// Orders the pair canonically (by hash), so that every node gossips and stores the same
    /// proof for the same two blocks.
    pub fn new(x: Block, y: Block) -> EquivocationProof {
        if x.hash() <= y.hash() { EquivocationProof { a: x, b: y } } else { EquivocationProof { a: y, b: x } }
    }

    /// The account that equivocated.
    pub fn account(&self) -> PeerId {
        self.a.account
    }

    /// The sequence number the account forked at: frozen from here.
    pub fn seq(&self) -> u64 {
        self.a.seq
    }

    /// Checks the proof on its own: one account, one seq, two different bodies, both
    /// well-formed and signed by the account's key.
    pub fn verify(&self) -> Result<(PeerId, u64), ProofError> {
        if self.a.account != self.b.account {
            return Err(ProofError::DifferentAccounts);
        }
        if self.a.seq != self.b.seq {
            return Err(ProofError::DifferentSeq);
        }
        if self.a.body_bytes() == self.b.body_bytes() {
            return Err(ProofError::Identical);
        }
        for block in [&self.a, &self.b] {
            check_shape(block).map_err(ProofError::InvalidBlock)?;
            block.verify_signature().map_err(ProofError::InvalidBlock)?;
        }
        Ok((self.a.account, self.a.seq))
    }

    /// Wire form: both blocks, each length-prefixed (u32).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for block in [&self.a, &self.b] {
            let bytes = block.to_bytes();
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Decodes [`EquivocationProof::to_bytes`]; checking it is [`EquivocationProof::verify`].
    pub fn from_bytes(mut bytes: &[u8]) -> Result<EquivocationProof, Rejected> {
        let mut blocks = Vec::with_capacity(2);
        for _ in 0..2 {
            let (len, rest) = bytes.split_first_chunk::<4>().ok_or(Rejected::Malformed("truncated proof"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if len > rest.len() {
                return Err(Rejected::Malformed("truncated proof"));
            }
            let (block, rest) = rest.split_at(len);
            blocks.push(Block::from_bytes(block)?);
            bytes = rest;
        }
        if !bytes.is_empty() {
            return Err(Rejected::Malformed("trailing bytes"));
        }
        let b = blocks.pop().ok_or(Rejected::Malformed("truncated proof"))?;
        let a = blocks.pop().ok_or(Rejected::Malformed("truncated proof"))?;
        Ok(EquivocationProof { a, b })
    }
}
