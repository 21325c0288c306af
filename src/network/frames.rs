//! Frames for the request/response protocols spoken over raw libp2p streams (the ledger's
//! anti-entropy, catching up on members' advertisements): a 4-byte big-endian length, then
//! CBOR, at most [`MAX_FRAME`] bytes.

use serde::{Deserialize, Serialize};

/// Largest frame either side writes or reads.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Writes one frame.
pub async fn write_frame<S, T>(stream: &mut S, message: &T) -> std::io::Result<()>
where
    S: futures::AsyncWrite + Unpin,
    T: Serialize,
{
    use futures::AsyncWriteExt;
    let body = cbor4ii::serde::to_vec(Vec::new(), message).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {} bytes over {MAX_FRAME}", body.len())));
    }
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly before it.
pub async fn read_frame<S, T>(stream: &mut S) -> std::io::Result<Option<T>>
where
    S: futures::AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    use futures::AsyncReadExt;
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes over {MAX_FRAME}")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    cbor4ii::serde::from_slice(&body).map(Some).map_err(|e| std::io::Error::other(e.to_string()))
}
