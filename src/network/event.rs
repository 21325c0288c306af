//! The network's vocabulary at its boundary: what it tells the rest of the node
//! ([`NetworkEvent`]), why a task got no answer ([`DispatchError`]), reachability
//! ([`NatStatus`]) and the point-in-time [`NetworkStatus`]. No swarm type crosses it.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::membership::Reach;
use crate::protocol::{
    CapabilityAdvertisement, HeartBeat, ProbeRequest, RecordsRequest, RecordsResponse, TaskRequest, TaskResponse,
};

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// libp2p's own ping failed (`Reach::Unknown`: it timed out).
    PingFailed {
        peer: PeerId,
        reach: Reach,
    },
    /// A peer subscribed to one of our topics: a good moment to (re)advertise.
    Subscribed {
        peer: PeerId,
    },
    HeartBeat {
        from: PeerId,
        message: HeartBeat,
    },
    Advertisement {
        from: PeerId,
        message: CapabilityAdvertisement,
    },
    /// A ledger block or proof, opened and its signatures checked (`crate::ledger::wire`);
    /// `from` is the peer that forwarded it.
    Ledger {
        from: PeerId,
        message: crate::ledger::wire::Gossiped,
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
        reach: Reach,
        /// From the request to the answer (or the failure).
        rtt: Duration,
    },
    /// A member forwards task-record copies to us, or asks for a record.
    RecordsRequested {
        id: InboundId,
        peer: PeerId,
        request: RecordsRequest,
    },
    /// The answer (or failure) for a `Client::send_records`, with its tag.
    RecordsAnswered {
        peer: PeerId,
        tag: u64,
        result: Result<RecordsResponse, DispatchError>,
    },
    Nat(NatStatus),
    /// The routing table's size changed (readiness needs a non-empty one).
    RoutingTable {
        size: usize,
    },
}

impl NetworkEvent {
    /// The failure of one attempt of a task, as the gateway hears it.
    pub fn task_failed(peer: PeerId, request: TaskRequest, error: DispatchError) -> Self {
        let TaskRequest { task_id, attempt, .. } = request;
        NetworkEvent::TaskAnswered { peer, task_id, attempt, result: Err(error) }
    }
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
