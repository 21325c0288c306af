//! The p2p network: one task owns the libp2p `Swarm`; everything else talks to it through
//! a cloneable [`Client`] and hears from it through [`NetworkEvent`]s.
//!
//! This is the boundary: swarm and behaviour events are translated here into the small
//! domain enum below, so membership, scheduler, worker and API never import swarm types.

mod behaviour;
pub mod codec;
mod discovery;
mod event_loop;
pub mod lanes;
mod swarm;
pub mod view;

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{GossipMessage, ProbeRequest, TaskRequest, TaskResponse};

pub use event_loop::{EventLoop, is_loopback, is_unroutable};
pub use swarm::{BuildError, NetworkSetup, ProtocolNames, build, gossip_config};

/// Bound of the command channel into the event loop.
pub const COMMAND_CHANNEL: usize = 4096;
/// Bound of the event channel out of the event loop.
pub const EVENT_CHANNEL: usize = 4096;

/// Correlates an inbound request with the reply the event loop is holding for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundId(pub u64);

/// Reachability as AutoNAT sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NatStatus {
    #[default]
    Unknown,
    Public,
    Private,
}

impl NatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private",
        }
    }
}

/// Why a task request did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    #[error("could not reach worker: {0}")]
    Unreachable(String),
    #[error("connection to worker lost: {0}")]
    ConnectionLost(String),
    #[error("no answer from worker in time")]
    Timeout,
    #[error("worker sent an unusable answer: {0}")]
    BadResponse(String),
}

/// What the network tells the rest of the node.
#[derive(Debug)]
pub enum NetworkEvent {
    Listening(Multiaddr),
    /// First connection to `peer` (later parallel connections are not reported).
    PeerConnected {
        peer: PeerId,
        address: Multiaddr,
        relayed: bool,
        /// The role the peer's Identify agent string names, known before any gossip.
        role: Option<String>,
    },
    /// The connection to `peer` changed from relayed to direct (hole punch) or back.
    ConnectionKind {
        peer: PeerId,
        relayed: bool,
    },
    /// The last connection to `peer` closed; `failure` is false for an orderly close and for
    /// one outside the active view (both ends meant it).
    PeerDisconnected {
        peer: PeerId,
        failure: bool,
    },
    /// A dial asked for with `Client::dial` failed (other dials to the peer are not reported).
    DialFailed {
        peer: PeerId,
    },
    PingOk {
        peer: PeerId,
        rtt: Duration,
    },
    PingFailed {
        peer: PeerId,
    },
    /// A peer subscribed to one of our topics: a good moment to (re)advertise.
    Subscribed {
        peer: PeerId,
    },
    HeartBeat {
        from: PeerId,
        message: crate::protocol::HeartBeat,
    },
    Advertisement {
        from: PeerId,
        message: crate::protocol::CapabilityAdvertisement,
    },
    TaskRequested {
        id: InboundId,
        peer: PeerId,
        request: TaskRequest,
    },
    /// The answer (or failure) for a `Command::SendTask`.
    TaskAnswered {
        peer: PeerId,
        task_id: String,
        attempt: u32,
        result: Result<TaskResponse, DispatchError>,
    },
    ProbeRequested {
        id: InboundId,
        peer: PeerId,
        request: ProbeRequest,
    },
    /// The answer to a `Command::SendProbe`: `via == target` for a direct ping.
    ProbeAnswered {
        via: PeerId,
        target: PeerId,
        reachable: bool,
        /// From the request to the answer (or the failure).
        rtt: Duration,
    },
    Nat(NatStatus),
    /// The routing table's size changed (readiness needs a non-empty one).
    RoutingTable {
        size: usize,
    },
}

/// A point-in-time view of the network for `status`.
#[derive(Debug, Clone)]
pub struct NetworkStatus {
    pub listen_addresses: Vec<Multiaddr>,
    pub external_addresses: Vec<Multiaddr>,
    pub nat: NatStatus,
    pub connected_peers: usize,
    pub routing_table_size: usize,
    pub relay_reservations: usize,
}

#[derive(Debug)]
pub(crate) enum Command {
    SendTask { peer: PeerId, addresses: Vec<Multiaddr>, request: TaskRequest },
    RespondTask { id: InboundId, response: TaskResponse },
    SendProbe { via: PeerId, target: PeerId },
    RespondProbe { id: InboundId, target: PeerId, reachable: bool },
    Publish { message: GossipMessage },
    Dial { peer: PeerId, addresses: Vec<Multiaddr> },
    PutRecord { key: Vec<u8>, value: Vec<u8>, replication: usize, reply: oneshot::Sender<Result<usize, String>> },
    GetRecord { key: Vec<u8>, reply: oneshot::Sender<Result<Option<Vec<u8>>, String>> },
    Status { reply: oneshot::Sender<NetworkStatus> },
    GossipScores { reply: oneshot::Sender<std::collections::HashMap<PeerId, f64>> },
    Disconnect { peer: PeerId },
    ClusterSize { members: usize },
    Forget { peer: PeerId },
}

/// Cloneable handle to the network event loop.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

/// The event loop has stopped (the node is shutting down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("network is shut down")]
pub struct Closed;

impl Client {
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

    pub async fn respond_probe(&self, id: InboundId, target: PeerId, reachable: bool) -> Result<(), Closed> {
        self.send(Command::RespondProbe { id, target, reachable }).await
    }

    /// Seals `message` with this node's key and publishes it on the topic of its type.
    pub async fn publish(&self, message: GossipMessage) -> Result<(), Closed> {
        self.send(Command::Publish { message }).await
    }

    pub async fn dial(&self, peer: PeerId, addresses: Vec<Multiaddr>) -> Result<(), Closed> {
        self.send(Command::Dial { peer, addresses }).await
    }

    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Closed> {
        self.send(Command::Disconnect { peer }).await
    }

    /// `peer` is dead or has left: drops it from the routing table (which does not evict on
    /// its own, see `EventLoop::learn_address`). Should it come back, Identify adds it again.
    pub async fn forget(&self, peer: PeerId) -> Result<(), Closed> {
        self.send(Command::Forget { peer }).await
    }

    /// How many members the cluster has (this node included, the dead and left not): the
    /// size of the active view follows it.
    pub async fn set_cluster_size(&self, members: usize) -> Result<(), Closed> {
        self.send(Command::ClusterSize { members }).await
    }

    /// Stores `value` under `key` in the DHT; resolves to the number of peers that stored it.
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>, replication: usize) -> Result<usize, String> {
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

    /// GossipSub score of each connected peer (empty when the mesh is off).
    pub async fn gossip_scores(&self) -> Result<std::collections::HashMap<PeerId, f64>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::GossipScores { reply }).await?;
        rx.await.map_err(|_| Closed)
    }
}
