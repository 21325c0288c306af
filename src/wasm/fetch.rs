//! The module protocol (`/<protocol_version>/module/1.0.0`): how a worker given a task for a
//! module it lacks gets the module from the node that sent the task. Nothing is fetched from
//! outside the cluster.
//!
//! One stream per fetch carries request/response pairs, one per chunk, so a large module
//! never needs one large message and each side bounds what it reads:
//! - request, 44 bytes: the module's SHA-256 (32), the offset (u64, big-endian), the most
//!   bytes wanted (u32);
//! - response: a status byte (0 found, 1 not found); when found, the module's total size
//!   (u64) and the chunk (u32 length, then the bytes, at most [`CHUNK_BYTES`]).
//!
//! The fetching side refuses a total over its `wasm.max_module_bytes`, a chunk that does not
//! continue where the last ended, and a whole whose hash is not the id it asked for.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ModuleId;
use super::modules::ModuleStore;

/// Largest chunk one response carries.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Fetches a node serves at once; more streams are closed at once.
const MAX_SERVING: usize = 16;
/// A serving stream with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(10);
const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;

/// The protocol's name in a cluster named `protocol_version`.
pub fn protocol(protocol_version: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/{protocol_version}/module/1.0.0"))
        .expect("protocol versions are validated to start-safe characters")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open a stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("{0} does not have the module")]
    NotFound(PeerId),
    #[error("the module is {size} bytes, over wasm.max_module_bytes ({max})")]
    TooLarge { size: u64, max: u64 },
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("the bytes received do not hash to the module id")]
    HashMismatch,
    #[error("stream failed: {0}")]
    Io(String),
    #[error("no complete module within {0:?}")]
    Timeout(Duration),
}

/// Fetches `id` from `peer`, at most `max_bytes`, within `timeout`; the bytes returned hash
/// to `id`.
pub async fn fetch(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    peer: PeerId,
    id: ModuleId,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let work = async {
        let stream =
            control.open_stream(peer, protocol).await.map_err(|e| FetchError::Open { peer, reason: e.to_string() })?;
        fetch_over(stream, peer, id, max_bytes).await
    };
    tokio::time::timeout(timeout, work).await.unwrap_or(Err(FetchError::Timeout(timeout)))
}

/// The fetching side of the protocol on an open stream (`peer` names the other end in errors).
pub async fn fetch_over<S>(mut stream: S, peer: PeerId, id: ModuleId, max_bytes: u64) -> Result<Vec<u8>, FetchError>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| FetchError::Io(e.to_string());
    let mut bytes = Vec::new();
    loop {
        let mut request = [0u8; 44];
        request[..32].copy_from_slice(id.digest());
        request[32..40].copy_from_slice(&(bytes.len() as u64).to_be_bytes());
        request[40..].copy_from_slice(&(CHUNK_BYTES as u32).to_be_bytes());
        stream.write_all(&request).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut status = [0u8; 1];
        stream.read_exact(&mut status).await.map_err(io)?;
        match status[0] {
            FOUND => {}
            NOT_FOUND => return Err(FetchError::NotFound(peer)),
            other => return Err(FetchError::Malformed(format!("status {other}"))),
        }
        let mut header = [0u8; 12];
        stream.read_exact(&mut header).await.map_err(io)?;
        let total = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        if total > max_bytes {
            return Err(FetchError::TooLarge { size: total, max: max_bytes });
        }
        if len > CHUNK_BYTES || bytes.len() as u64 + len as u64 > total {
            return Err(FetchError::Malformed(format!("chunk of {len} bytes at {} of {total}", bytes.len())));
        }
        if len == 0 && (bytes.len() as u64) < total {
            return Err(FetchError::Malformed("empty chunk before the end".into()));
        }
        let start = bytes.len();
        bytes.resize(start + len, 0);
        stream.read_exact(&mut bytes[start..]).await.map_err(io)?;
        if bytes.len() as u64 == total {
            let _ = stream.close().await;
            break;
        }
    }
    if !id.matches(&bytes) {
        return Err(FetchError::HashMismatch);
    }
    Ok(bytes)
}

/// Serves the modules in `store` to every peer that asks, until `stop`.
pub fn serve(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    store: Arc<ModuleStore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let Ok(mut incoming) = control.accept(protocol) else {
        tracing::error!("the module protocol is already served");
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_SERVING));
    let spawner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (peer, stream) = tokio::select! {
                _ = stop.cancelled() => break,
                next = incoming.next() => match next { Some(s) => s, None => break },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "module fetch refused: serving {MAX_SERVING} already");
                continue;
            };
            let store = store.clone();
            let stop = stop.clone();
            spawner.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = answer(stream, store) => if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "module fetch ended");
                    },
                }
                drop(slot);
            });
        }
    });
}

/// Answers one stream's requests until it closes or idles.
pub async fn answer<S>(mut stream: S, store: Arc<ModuleStore>) -> std::io::Result<()>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    loop {
        let mut request = [0u8; 44];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut request)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        }
        let id = ModuleId::from_digest(request[..32].try_into().expect("32 bytes"));
        let offset = u64::from_be_bytes(request[32..40].try_into().expect("8 bytes"));
        let want = (u32::from_be_bytes(request[40..].try_into().expect("4 bytes")) as usize).min(CHUNK_BYTES);
        let store = store.clone();
        let chunk = tokio::task::spawn_blocking(move || store.chunk(&id, offset, want)).await.ok().flatten();
        match chunk {
            None => {
                stream.write_all(&[NOT_FOUND]).await?;
                stream.flush().await?;
                return Ok(());
            }
            Some((total, bytes)) => {
                let mut frame = Vec::with_capacity(13 + bytes.len());
                frame.push(FOUND);
                frame.extend_from_slice(&total.to_be_bytes());
                frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                frame.extend_from_slice(&bytes);
                stream.write_all(&frame).await?;
                stream.flush().await?;
            }
        }
    }
}
