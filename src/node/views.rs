//! Read-only views of the node for the API and the CLI (`peers`, `status`, `capabilities`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    pub peer_id: String,
    pub role: String,
    pub state: String,
    pub incarnation: u64,
    pub addresses: Vec<String>,
    /// `direct`, `relayed`, or `none` when we only hear of it through others.
    pub connection: String,
    pub rtt_ms: Option<f64>,
    pub capabilities: Vec<String>,
    pub load: u32,
    pub capacity: u32,
    /// Its GossipSub score here (connected peers only); below -80 it is graylisted.
    pub gossip_score: Option<f64>,
    /// When this node took in the peer's latest capability advertisement (Unix time, ms).
    pub advertised_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberCounts {
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
    pub left: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Waiting at this gateway for a free worker.
    pub queued: usize,
    /// Dispatched by this gateway and awaiting an answer.
    pub running: usize,
    /// Executing on this node as a worker.
    pub executing: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub peer_id: String,
    pub role: String,
    pub version: String,
    pub protocol_version: String,
    pub listen_addresses: Vec<String>,
    pub external_addresses: Vec<String>,
    pub nat_status: String,
    pub connected_peers: usize,
    pub members: MemberCounts,
    pub routing_table_size: usize,
    /// Lifeguard local health score of the failure detector: 0 healthy, up to 8 (this node's
    /// ping deadlines, probe windows and suspicion timeouts stretch by 1 + score).
    pub local_health: u32,
    pub uptime_secs: u64,
    pub ready: bool,
    pub tasks: TaskCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalCapabilities {
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub load: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterCapability {
    pub alive_workers: usize,
    pub workers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapabilitiesView {
    pub local: LocalCapabilities,
    pub cluster: BTreeMap<String, ClusterCapability>,
}
