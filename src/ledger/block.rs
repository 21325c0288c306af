//! The block: one step of one account's chain, its canonical encoding (what is signed and
//! hashed, and what goes on the wire), signing and signature checks.
//!
//! An account is a peer id; only the holder of its identity key can extend its chain. The
//! public key is not carried: the account's peer id embeds it (an identity multihash, as
//! libp2p makes for ed25519 and secp256k1 keys), so a block names its signer exactly once.
//!
//! The encoding is a fixed binary layout, version 1, every integer big-endian:
//!
//! ```text
//! body  = version:u8 (=1) · peer(account) · seq:u64 · prev:[32]
//!         · n_deps:u16 · n_deps × (peer · seq:u64)
//!         · n_entries:u16 · n_entries × (peer(to) · amount:u64 · tasks:u32 · tasks_digest:[32])
//! peer  = len:u8 · the peer id's bytes (38 for ed25519)
//! block = body · sig_len:u8 · signature (64 for ed25519)
//! ```
//!
//! Each field has exactly one encoding and decoding rejects anything else (a non-canonical
//! peer id, trailing bytes), so a block's bytes are a function of its value. The block's
//! hash is SHA-256 of `body`; the signature is over `SIGNING_DOMAIN · body`, so a block
//! signature can never be replayed as a signature of anything else the identity key signs.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use sha2::{Digest, Sha256};

use super::validate::Rejected;
use super::{MAX_BLOCK_BYTES, MAX_DEPS, MAX_ENTRIES};

/// Prefixed to the body before signing: domain separation from the key's other uses.
pub const SIGNING_DOMAIN: &[u8] = b"p2p-network/ledger/block/v1\0";

/// The encoding's version byte.
const VERSION: u8 = 1;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of an account's first block.
pub const ZERO_HASH: Hash = [0; 32];

/// A block of another account whose payments this block acknowledges: every block of
/// `account` up to and including `seq` (chains are linear, so one number covers a prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dep {
    pub account: PeerId,
    pub seq: u64,
}

/// A payment out, aggregated per recipient and block: `amount` credits for `tasks` tasks
/// whose ids hash to `tasks_digest` (see [`tasks_digest`]); the payer keeps the ids, and
/// anyone shown them can check the digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub to: PeerId,
    pub amount: u64,
    pub tasks: u32,
    pub tasks_digest: Hash,
}

/// One signed step of `account`'s chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Block {
    pub account: PeerId,
    /// 1 for the first block of an account, then each block one more.
    pub seq: u64,
    /// Hash of the previous block ([`Block::hash`]); [`ZERO_HASH`] for seq 1.
    pub prev: Hash,
    /// Other accounts' blocks this one acknowledges, at most one per account.
    pub deps: Vec<Dep>,
    pub entries: Vec<Entry>,
    pub signature: Vec<u8>,
}

/// Where a block sits: account and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    pub account: PeerId,
    pub seq: u64,
}

impl Block {
    /// Builds and signs a block with the account's identity key.
    pub fn sign(keypair: &Keypair, seq: u64, prev: Hash, deps: Vec<Dep>, entries: Vec<Entry>) -> Block {
        let mut block =
            Block { account: keypair.public().to_peer_id(), seq, prev, deps, entries, signature: Vec::new() };
        let mut message = SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(&block.body_bytes());
        // Signing fails only for RSA keys with absurd inputs; the project's keys are ed25519.
        block.signature = keypair.sign(&message).expect("an ed25519 key signs any message");
        block
    }

    pub fn id(&self) -> BlockId {
        BlockId { account: self.account, seq: self.seq }
    }

    /// The canonical encoding without the signature: what is signed and hashed.
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(VERSION);
        put_peer(&mut out, &self.account);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        // Counts above u16 cannot be signed and sent by us: `check_shape` bounds them far lower.
        out.extend_from_slice(&(self.deps.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for dep in &self.deps {
            put_peer(&mut out, &dep.account);
            out.extend_from_slice(&dep.seq.to_be_bytes());
        }
        out.extend_from_slice(&(self.entries.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for entry in &self.entries {
            put_peer(&mut out, &entry.to);
            out.extend_from_slice(&entry.amount.to_be_bytes());
            out.extend_from_slice(&entry.tasks.to_be_bytes());
            out.extend_from_slice(&entry.tasks_digest);
        }
        out
    }

    /// SHA-256 of the body: the `prev` of the next block, and the block's identity.
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.body_bytes()).into()
    }

    /// The wire and storage form: body, then the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body_bytes();
        out.push(self.signature.len().min(u8::MAX as usize) as u8);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Length of [`Block::to_bytes`] without building it.
    pub fn encoded_len(&self) -> usize {
        let peer = |p: &PeerId| 1 + p.to_bytes().len();
        1 + peer(&self.account)
            + 8
            + 32
            + 2
            + self.deps.iter().map(|d| peer(&d.account) + 8).sum::<usize>()
            + 2
            + self.entries.iter().map(|e| peer(&e.to) + 8 + 4 + 32).sum::<usize>()
            + 1
            + self.signature.len()
    }

    /// Decodes the wire form strictly: bounded, canonical, nothing left over.
    pub fn from_bytes(bytes: &[u8]) -> Result<Block, Rejected> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(Rejected::Oversized);
        }
        let mut r = Reader { bytes, at: 0 };
        if r.u8()? != VERSION {
            return Err(Rejected::Malformed("unknown version"));
        }
        let account = r.peer()?;
        let seq = r.u64()?;
        let prev = r.hash()?;
        let n_deps = r.u16()? as usize;
        if n_deps > MAX_DEPS {
            return Err(Rejected::Oversized);
        }
        let mut deps = Vec::with_capacity(n_deps);
        for _ in 0..n_deps {
            deps.push(Dep { account: r.peer()?, seq: r.u64()? });
        }
        let n_entries = r.u16()? as usize;
        if n_entries > MAX_ENTRIES {
            return Err(Rejected::Oversized);
        }
        let mut entries = Vec::with_capacity(n_entries);
        for _ in 0..n_entries {
            entries.push(Entry { to: r.peer()?, amount: r.u64()?, tasks: r.u32()?, tasks_digest: r.hash()? });
        }
        let sig_len = r.u8()? as usize;
        let signature = r.take(sig_len)?.to_vec();
        if r.at != bytes.len() {
            return Err(Rejected::Malformed("trailing bytes"));
        }
        Ok(Block { account, seq, prev, deps, entries, signature })
    }

    /// Checks the signature against the key the account's peer id embeds.
    pub fn verify_signature(&self) -> Result<(), Rejected> {
        let key = account_key(&self.account).ok_or(Rejected::KeyMismatch)?;
        let mut message = SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(&self.body_bytes());
        if key.verify(&message, &self.signature) { Ok(()) } else { Err(Rejected::BadSignature) }
    }

    /// Credits this block moves out of its account.
    pub fn total_out(&self) -> i128 {
        self.entries.iter().map(|e| i128::from(e.amount)).sum()
    }

    /// Credits this block pays to `to`.
    pub fn paid_to(&self, to: &PeerId) -> i128 {
        self.entries.iter().filter(|e| e.to == *to).map(|e| i128::from(e.amount)).sum()
    }
}

/// The public key a peer id embeds (identity multihash of the protobuf-encoded key), if it
/// embeds one; peer ids of large keys are hashes and cannot own an account.
pub fn account_key(account: &PeerId) -> Option<PublicKey> {
    let bytes = account.to_bytes();
    // Identity multihash: code 0x00, then the digest's length (one varint byte below 128).
    let (&code, rest) = bytes.split_first()?;
    let (&len, digest) = rest.split_first()?;
    if code != 0 || len >= 0x80 || usize::from(len) != digest.len() {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(digest).ok()?;
    (key.to_peer_id() == *account).then_some(key)
}

/// Digest of the task ids an entry pays for: SHA-256 over the ids sorted, each
/// length-prefixed (u32), so that it depends on the set and not on the order.
pub fn tasks_digest<S: AsRef<str>>(ids: &[S]) -> Hash {
    let mut sorted: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for id in sorted {
        h.update((id.len() as u32).to_be_bytes());
        h.update(id.as_bytes());
    }
    h.finalize().into()
}

fn put_peer(out: &mut Vec<u8>, peer: &PeerId) {
    let bytes = peer.to_bytes();
    // A peer id's multihash holds at most 64 bytes of digest, so this always fits.
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejected> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(Rejected::Malformed("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Rejected> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Rejected> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Rejected> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Rejected> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Rejected> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn hash(&mut self) -> Result<Hash, Rejected> {
        self.array()
    }

    fn peer(&mut self) -> Result<PeerId, Rejected> {
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        let peer = PeerId::from_bytes(bytes).map_err(|_| Rejected::Malformed("bad peer id"))?;
        // Only the canonical bytes, so that the encoding stays a function of the value.
        if peer.to_bytes() != bytes {
            return Err(Rejected::Malformed("non-canonical peer id"));
        }
        Ok(peer)
    }
}
