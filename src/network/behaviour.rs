//! The composed libp2p behaviour: which protocols a node speaks, switched per role.
//!
//! Connection limits come first so a refused connection never reaches the others.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, memory_connection_limits, ping, relay,
    request_response,
};

use super::codec::Counted;
use crate::protocol::{ProbeRequest, ProbeResponse, RecordsRequest, RecordsResponse, TaskRequest, TaskResponse};

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Total, pending and per-peer connection caps (`node.max_connections`, `limits`).
    pub limits: connection_limits::Behaviour,
    /// Refuses new connections when the process is close to running out of memory.
    pub memory: memory_connection_limits::Behaviour,
    /// Exchanges protocol version, listen and observed addresses; other clusters are told apart here.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time of every connection, input to membership.
    pub ping: ping::Behaviour,
    /// Peer routing and the storage capability's records, under the cluster's own protocol name.
    pub kad: kad::Behaviour<crate::store::dht::DhtStore>,
    /// Heartbeats and capability advertisements; off when `network.mesh_network` is false.
    /// Messages are validated by the application before they are forwarded; peers are scored.
    pub gossipsub: Toggle<gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>>,
    /// LAN discovery; off inside Kubernetes where multicast does not cross the CNI.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Learns whether this node is publicly reachable (and serves the question for others).
    pub autonat: autonat::Behaviour,
    /// Circuit relay v2 server, on the relay role only.
    pub relay_server: Toggle<relay::Behaviour>,
    /// Relay client, so a node behind NAT can be reached through a relay.
    pub relay_client: Toggle<relay::client::Behaviour>,
    /// Upgrades relayed connections to direct ones by hole punching.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// Task lanes: one long-lived stream per submitter and worker carrying many tasks.
    pub streams: libp2p_stream::Behaviour,
    /// Task dispatch one stream per task: `TaskRequest` to a worker, `TaskResponse` back.
    /// Every node serves it; a submitter uses it for peers that speak no task lanes.
    pub tasks: request_response::Behaviour<Counted<TaskRequest, TaskResponse>>,
    /// SWIM indirect probes: "can you reach this peer?"
    pub probe: request_response::Behaviour<Counted<ProbeRequest, ProbeResponse>>,
    /// Task-record copies: a gateway's records forwarded to their holders, and lookups of
    /// records held elsewhere (`tasks.record_copies`).
    pub records: request_response::Behaviour<Counted<RecordsRequest, RecordsResponse>>,
}
