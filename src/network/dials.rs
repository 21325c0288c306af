//! Why this node opens connections: each dial is counted by its cause when the swarm starts
//! it (`p2p_dials_total{reason}`), so a dashboard can tell a settled cluster (nearly no dials)
//! from one churning its connections, and which part of the node does it.
//!
//! The node's own dials are counted where they start (`Swarm::dial` emits no event); the
//! swarm reports the dials a libp2p behaviour starts on its own (Kademlia's queries, a request
//! sent to a peer not connected, a relay reservation) as `SwarmEvent::Dialing`.

/// Why a dial was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialCause {
    /// Membership's direct ping of a member not connected (SWIM, or a probe for someone else).
    Ping,
    /// Task records sent to a copy holder not connected.
    Records,
    /// A member of the active view not connected.
    View,
    /// A peer just discovered (Kademlia, mDNS) while the view is not full.
    Discovery,
    /// A configured bootstrap address.
    Bootstrap,
    /// A task for a worker not connected.
    Task,
    /// Started by a libp2p behaviour on its own.
    Libp2p,
}

impl DialCause {
    pub const ALL: [DialCause; 7] = [
        DialCause::Ping,
        DialCause::Records,
        DialCause::View,
        DialCause::Discovery,
        DialCause::Bootstrap,
        DialCause::Task,
        DialCause::Libp2p,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DialCause::Ping => "ping",
            DialCause::Records => "records",
            DialCause::View => "view",
            DialCause::Discovery => "discovery",
            DialCause::Bootstrap => "bootstrap",
            DialCause::Task => "task",
            DialCause::Libp2p => "libp2p",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_have_distinct_snake_case_labels() {
        let labels: std::collections::HashSet<_> = DialCause::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), DialCause::ALL.len());
        assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())), "{labels:?}");
    }
}
