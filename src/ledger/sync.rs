//! Anti-entropy (`/<protocol_version>/ledger/1.0.0`): one round compares this node's ledger
//! with one peer's and fetches what this node lacks, so that a node that missed gossip, was
//! partitioned or joins late converges. The frames are in [`super::wire`].
//!
//! A round: send the digest of our heads; `Same` ends it (the common case, one small
//! exchange). Otherwise the peer's heads tell which ranges of which accounts we lack (and
//! which accounts it knows frozen); ranges are fetched in answers of at most
//! `MAX_RANGE_BLOCKS` blocks (and [`super::wire::MAX_FRAME`] bytes), within [`ROUND_TIMEOUT`]
//! and [`MAX_BLOCKS_PER_ROUND`]. Blocks are inserted by the service, not here.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::service::LedgerHandle;
use super::wire::{self, SyncRequest, SyncResponse, WireHead};
use super::{Block, EquivocationProof, MAX_RANGE_BLOCKS};

/// Longest one round may take.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most blocks one round fetches; the next round goes on from there.
pub const MAX_BLOCKS_PER_ROUND: usize = 200_000;
/// Most block bytes one round holds before handing them over.
pub const MAX_BYTES_PER_ROUND: usize = 64 * 1024 * 1024;
/// Rounds a node answers at once; more streams are closed at once.
const MAX_SERVING: usize = 16;
/// A serving stream with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(10);

pub fn protocol(protocol_version: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/{protocol_version}/ledger/1.0.0"))
        .expect("protocol versions are validated to start-safe characters")
}

/// What a round brought.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The digests were equal: nothing to fetch.
    pub same: bool,
    /// The peer's heads.
    pub heads: Vec<(PeerId, u64)>,
    pub blocks: Vec<Block>,
    pub proofs: Vec<EquivocationProof>,
}

/// One round with `peer`.
pub async fn round(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    peer: PeerId,
    ledger: &LedgerHandle,
) -> Result<Fetched, String> {
    let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
    let mut stream = tokio::time::timeout_at(deadline, control.open_stream(peer, protocol))
        .await
        .map_err(|_| format!("no stream within {ROUND_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    round_over(&mut stream, ledger, deadline).await
}

async fn ask<S>(stream: &mut S, request: &SyncRequest) -> Result<SyncResponse, String>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    wire::write_frame(stream, request).await.map_err(|e| e.to_string())?;
    wire::read_frame(stream).await.map_err(|e| e.to_string())?.ok_or_else(|| "stream closed".to_string())
}

/// The asking side of a round on an open stream. Past `deadline` it stops and hands over
/// what it fetched (the next round goes on from there); what it fetched is signature-checked
/// here, and one forged block ends the round (the peer that served it is to blame, not the
/// account it names).
pub async fn round_over<S>(
    stream: &mut S,
    ledger: &LedgerHandle,
    deadline: tokio::time::Instant,
) -> Result<Fetched, String>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let digest = ledger.digest();
    let request = SyncRequest::Heads { digest: wire::digest_bytes(&digest) };
    let heads = match tokio::time::timeout_at(deadline, ask(stream, &request))
        .await
        .map_err(|_| "no heads before the deadline".to_string())??
    {
        SyncResponse::Same => return Ok(Fetched { same: true, ..Fetched::default() }),
        SyncResponse::Heads(heads) => heads,
        other => return Err(format!("unexpected answer to heads: {other:?}")),
    };
    let mut remote = Vec::with_capacity(heads.len());
    let mut frozen = Vec::new();
    for WireHead { account, seq, frozen_from } in heads.into_iter().take(wire::MAX_HEADS) {
        let Some(peer) = wire::peer_from(&account) else { return Err("a head names no peer id".into()) };
        remote.push((peer, seq));
        if frozen_from > 0 {
            frozen.push((peer, frozen_from));
        }
    }
    // What we lack of their chains, what our pending blocks wait for, and freezes we have not seen.
    let (mut ranges, proofs_wanted) = ledger.with_ledger(|l| {
        let mut ranges = l.missing_ranges(&remote);
        ranges.extend(l.wanted());
        let proofs: Vec<PeerId> = frozen
            .iter()
            .filter(|(peer, from)| l.head(peer).frozen_from.is_none_or(|ours| ours > *from))
            .map(|(peer, _)| *peer)
            .collect();
        (ranges, proofs)
    });
    ranges.sort();
    ranges.dedup();
    let mut fetched = Fetched { heads: remote, ..Fetched::default() };
    if !proofs_wanted.is_empty() {
        let accounts = proofs_wanted.iter().map(wire::peer_bytes).collect();
        let request = SyncRequest::Proofs { accounts };
        match tokio::time::timeout_at(deadline, ask(stream, &request))
            .await
            .map_err(|_| "no proofs before the deadline".to_string())??
        {
            SyncResponse::Proofs(proofs) => {
                for bytes in proofs {
                    let proof = EquivocationProof::from_bytes(&bytes).map_err(|e| format!("a proof: {e}"))?;
                    proof.verify().map_err(|e| format!("a proof: {e}"))?;
                    fetched.proofs.push(proof);
                }
            }
            other => return Err(format!("unexpected answer to proofs: {other:?}")),
        }
    }
    let mut bytes_held = 0;
    'ranges: for (account, mut from, to) in ranges {
        while from <= to {
            if fetched.blocks.len() >= MAX_BLOCKS_PER_ROUND || bytes_held >= MAX_BYTES_PER_ROUND {
                break 'ranges;
            }
            let request = SyncRequest::Range { account: wire::peer_bytes(&account), from, to };
            let Ok(answer) = tokio::time::timeout_at(deadline, ask(stream, &request)).await else {
                // Out of time: keep what came (it is valid), the next round goes on.
                break 'ranges;
            };
            let SyncResponse::Blocks(blocks) = answer? else {
                return Err("unexpected answer to a range".into());
            };
            if blocks.is_empty() {
                break;
            }
            for bytes in blocks {
                let block = Block::from_bytes(&bytes).map_err(|e| format!("a block: {e}"))?;
                if block.account != account || block.seq != from {
                    return Err(format!("asked for {account} #{from}, got {} #{}", block.account, block.seq));
                }
                block.verify_signature().map_err(|e| format!("{account} #{from}: {e}"))?;
                bytes_held += bytes.len();
                from += 1;
                fetched.blocks.push(block);
            }
        }
    }
    Ok(fetched)
}

/// Answers every peer's rounds from `ledger`, until `stop`.
pub fn serve(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    ledger: LedgerHandle,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let Ok(mut incoming) = control.accept(protocol) else {
        tracing::error!("the ledger protocol is already served");
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_SERVING));
    let spawner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (peer, mut stream) = tokio::select! {
                _ = stop.cancelled() => break,
                next = incoming.next() => match next { Some(s) => s, None => break },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "ledger sync refused: serving {MAX_SERVING} already");
                continue;
            };
            let (ledger, stop) = (ledger.clone(), stop.clone());
            spawner.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = answer(&mut stream, &ledger) => if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "ledger sync ended");
                    },
                }
                drop(slot);
            });
        }
    });
}

/// Answers one stream's requests until it closes or idles.
pub async fn answer<S>(stream: &mut S, ledger: &LedgerHandle) -> std::io::Result<()>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    loop {
        let request: SyncRequest = match tokio::time::timeout(IDLE, wire::read_frame(stream)).await {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(r) => r?.expect("None handled above"),
        };
        let response = ledger.with_ledger(|l| respond(l, request));
        wire::write_frame(stream, &response).await?;
    }
}

fn respond(l: &super::Ledger, request: SyncRequest) -> SyncResponse {
    match request {
        SyncRequest::Heads { digest } => {
            if digest.as_slice() == l.digest() {
                return SyncResponse::Same;
            }
            let heads = l
                .heads()
                .into_iter()
                .take(wire::MAX_HEADS)
                .map(|(peer, seq)| WireHead {
                    account: wire::peer_bytes(&peer),
                    seq,
                    frozen_from: l.head(&peer).frozen_from.unwrap_or(0),
                })
                .collect();
            SyncResponse::Heads(heads)
        }
        SyncRequest::Range { account, from, to } => {
            let Some(peer) = wire::peer_from(&account) else { return SyncResponse::Blocks(Vec::new()) };
            let mut size = 0;
            let blocks = l
                .blocks(&peer, from, to.min(from.saturating_add(MAX_RANGE_BLOCKS as u64)))
                .into_iter()
                .map(|b| b.to_bytes())
                .take_while(|b| {
                    size += b.len() + 16;
                    size < wire::MAX_FRAME - 1024
                })
                .map(serde_bytes::ByteBuf::from)
                .collect();
            SyncResponse::Blocks(blocks)
        }
        SyncRequest::Proofs { accounts } => {
            let wanted: Vec<PeerId> = accounts.iter().filter_map(|a| wire::peer_from(a)).collect();
            let proofs =
                l.proofs().filter(|p| wanted.contains(&p.account())).map(|p| serde_bytes::ByteBuf::from(p.to_bytes()));
            SyncResponse::Proofs(proofs.collect())
        }
    }
}
