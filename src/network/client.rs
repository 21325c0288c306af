//! The network's client: a cloneable handle holding only a bounded sender of [`Command`]s
//! into the event loop; every command that wants an answer carries its reply channel.

use std::collections::HashMap;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::event::{InboundId, NetworkStatus};
use crate::membership::Reach;
use crate::metrics::DialCause;
use crate::protocol::{GossipMessage, RecordsRequest, RecordsResponse, TaskRequest, TaskResponse};

/// Bound of the command channel into the event loop.
pub const COMMAND_CHANNEL: usize = 4096;
/// Bound of the event channel out of the event loop.
pub const EVENT_CHANNEL: usize = 4096;

/// Where the answer to a DHT put goes: how many peers stored the record.
pub(super) type PutReply = oneshot::Sender<Result<PutOutcome, String>>;

/// How a DHT put went: `stored` remote peers hold the value, `wanted` were asked for (the
/// replication factor, or fewer when the routing table knows fewer peers). The putting node
/// keeps a copy too, not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub stored: usize,
    pub wanted: usize,
}

impl PutOutcome {
    /// Fewer peers stored it than were wanted.
    pub fn is_partial(&self) -> bool {
        self.stored < self.wanted
    }
}
/// Where the answer to a DHT get goes.
pub(super) type GetReply = oneshot::Sender<Result<Option<Vec<u8>>, String>>;

#[derive(Debug)]
pub(super) enum Command {
    SendTask { peer: PeerId, addresses: Vec<Multiaddr>, request: TaskRequest },
    RespondTask { id: InboundId, response: TaskResponse },
    SendProbe { via: PeerId, target: PeerId },
    SendRecords { peer: PeerId, tag: u64, request: RecordsRequest },
    RespondRecords { id: InboundId, response: RecordsResponse },
    RespondProbe { id: InboundId, target: PeerId, reach: Reach },
    Publish { message: GossipMessage },
    PublishLedger { data: Vec<u8> },
    Dial { peer: PeerId, addresses: Vec<Multiaddr>, cause: DialCause },
    PutRecord { key: Vec<u8>, value: Vec<u8>, replication: usize, reply: PutReply },
    GetRecord { key: Vec<u8>, reply: GetReply },
    Status { reply: oneshot::Sender<NetworkStatus> },
    GossipScores { reply: oneshot::Sender<HashMap<PeerId, f64>> },
    SetAppScore { peer: PeerId, score: f64 },
    Leaving,
    Disconnect { peer: PeerId },
    ClusterSize { members: usize },
    Forget { peer: PeerId },
}

/// Cloneable handle to the network event loop.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    /// Raw streams of the swarm's stream behaviour, for protocols that run outside the event
    /// loop (module fetches, `crate::wasm::fetch`).
    streams: libp2p_stream::Control,
}

/// The event loop has stopped (the node is shutting down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("network is shut down")]
pub struct Closed;

impl Client {
    pub(super) fn new(tx: mpsc::Sender<Command>, local_peer_id: PeerId, streams: libp2p_stream::Control) -> Self {
        Self { tx, local_peer_id, streams }
    }

    /// A handle to open and accept raw streams on the swarm's connections.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn send(&self, cmd: Command) -> Result<(), Closed> {
        self.tx.send(cmd).await.map_err(|_| Closed)
    }

    /// Sends one attempt of a task; the answer arrives as `NetworkEvent::TaskAnswered`.
    /// `addresses` are where the worker says it can be reached (its advertisement); when it
    /// is not connected, only those are dialed (any known address when there are none).
    pub async fn send_task(&self, peer: PeerId, addresses: Vec<Multiaddr>, request: TaskRequest) -> Result<(), Closed> {
        self.send(Command::SendTask { peer, addresses, request }).await
    }

    pub async fn respond_task(&self, id: InboundId, response: TaskResponse) -> Result<(), Closed> {
        self.send(Command::RespondTask { id, response }).await
    }

    pub async fn send_probe(&self, via: PeerId, target: PeerId) -> Result<(), Closed> {
        self.send(Command::SendProbe { via, target }).await
    }

    /// Sends a record-copy request; the answer arrives as `NetworkEvent::RecordsAnswered`
    /// with `tag`.
    pub async fn send_records(&self, peer: PeerId, tag: u64, request: RecordsRequest) -> Result<(), Closed> {
        self.send(Command::SendRecords { peer, tag, request }).await
    }

    pub async fn respond_records(&self, id: InboundId, response: RecordsResponse) -> Result<(), Closed> {
        self.send(Command::RespondRecords { id, response }).await
    }

    pub async fn respond_probe(&self, id: InboundId, target: PeerId, reach: Reach) -> Result<(), Closed> {
        self.send(Command::RespondProbe { id, target, reach }).await
    }

    /// Seals `message` with this node's key and publishes it on the topic of its type.
    pub async fn publish(&self, message: GossipMessage) -> Result<(), Closed> {
        self.send(Command::Publish { message }).await
    }

    /// Publishes a ledger message (`crate::ledger::wire`) on the ledger's topic.
    pub async fn publish_ledger(&self, data: Vec<u8>) -> Result<(), Closed> {
        self.send(Command::PublishLedger { data }).await
    }

    /// Dials `peer` unless connected; `cause` is what the dial is counted under.
    pub async fn dial(&self, peer: PeerId, addresses: Vec<Multiaddr>, cause: DialCause) -> Result<(), Closed> {
        self.send(Command::Dial { peer, addresses, cause }).await
    }

    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Closed> {
        self.send(Command::Disconnect { peer }).await
    }

    /// `peer` is dead or has left: drops it from the routing table (which does not evict on
    /// its own, see `Dht::learn_address`). Should it come back, Identify adds it again.
    pub async fn forget(&self, peer: PeerId) -> Result<(), Closed> {
        self.send(Command::Forget { peer }).await
    }

    /// How many members the cluster has (this node included, the dead and left not): the
    /// size of the active view follows it.
    pub async fn set_cluster_size(&self, members: usize) -> Result<(), Closed> {
        self.send(Command::ClusterSize { members }).await
    }

    /// Stores `value` under `key` in the DHT on up to `replication` peers; resolves to how many
    /// stored it (an error only when none did).
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>, replication: usize) -> Result<PutOutcome, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::PutRecord { key, value, replication, reply }).await.map_err(|e| e.to_string())?;
        rx.await.map_err(|_| Closed.to_string())?
    }

    pub async fn get_record(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::GetRecord { key, reply }).await.map_err(|e| e.to_string())?;
        rx.await.map_err(|_| Closed.to_string())?
    }

    pub async fn status(&self) -> Result<NetworkStatus, Closed> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| Closed)
    }

    /// This node is leaving: pings about it are answered "not reachable" from now on.
    pub async fn leaving(&self) -> Result<(), Closed> {
        self.send(Command::Leaving).await
    }

    /// Sets `peer`'s GossipSub application score (what the application thinks of it).
    pub async fn set_app_score(&self, peer: PeerId, score: f64) -> Result<(), Closed> {
        self.send(Command::SetAppScore { peer, score }).await
    }

    /// GossipSub score of each connected peer (empty when the mesh is off).
    pub async fn gossip_scores(&self) -> Result<HashMap<PeerId, f64>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::GossipScores { reply }).await?;
        rx.await.map_err(|_| Closed)
    }
}
