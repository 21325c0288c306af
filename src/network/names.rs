//! Names the cluster speaks under: protocol names and gossip topics derived from its
//! `protocol_version`, and Kademlia's constants.

use libp2p::{StreamProtocol, gossipsub};

/// Kademlia replication parameter k and lookup parallelism alpha.
pub(crate) const KAD_K: usize = 20;
pub(crate) const KAD_ALPHA: usize = 3;

/// Protocol names derived from the cluster's `protocol_version`, so that two clusters never
/// speak to each other and a cluster never joins the public IPFS DHT.
pub struct ProtocolNames {
    pub kad: StreamProtocol,
    pub tasks: StreamProtocol,
    pub task_lane: StreamProtocol,
    pub probe: StreamProtocol,
    pub records: StreamProtocol,
    /// Catching up on members' advertisements (`catch_up`).
    pub members: StreamProtocol,
    pub gossip_prefix: String,
    pub topic_prefix: String,
}

impl ProtocolNames {
    pub fn new(protocol_version: &str) -> Self {
        let p = |suffix: &str| {
            StreamProtocol::try_from_owned(format!("/{protocol_version}/{suffix}"))
                .expect("protocol_version is validated to be [A-Za-z0-9._-]+, which forms a valid protocol name")
        };
        Self {
            kad: p("kad/1.0.0"),
            tasks: p("task/1.0.0"),
            task_lane: p("task-lane/1.0.0"),
            probe: p("probe/1.0.0"),
            records: p("task-records/1.0.0"),
            members: p("members/1.0.0"),
            // Not GossipSub's own `meshsub`: our messages are sealed by their authors and carry no
            // GossipSub signature, so a node of the earlier, GossipSub-signed format must not
            // exchange (and reject, and penalise) messages with us.
            gossip_prefix: format!("/{protocol_version}/sealed-meshsub"),
            topic_prefix: format!("{protocol_version}/"),
        }
    }
}

/// The cluster's topics under its protocol version: heartbeats, capability adverts, and the
/// credit ledger's blocks and equivocation proofs.
pub fn gossip_topics(names: &ProtocolNames) -> [gossipsub::IdentTopic; 3] {
    [
        gossipsub::IdentTopic::new(format!("{}heartbeat", names.topic_prefix)),
        gossipsub::IdentTopic::new(format!("{}capabilities", names.topic_prefix)),
        gossipsub::IdentTopic::new(format!("{}ledger", names.topic_prefix)),
    ]
}
