//! Liveness and readiness: the `Health` the core keeps and the HTTP API reads, and the
//! rule that decides when the node is ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Liveness and readiness, shared with the HTTP API.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the epoch of the core loop's last turn.
    pub last_turn_ms: AtomicU64,
    pub ready: AtomicBool,
    pub shutting_down: AtomicBool,
}

impl Health {
    pub fn touch(&self) {
        self.last_turn_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The core loop turned recently.
    pub fn is_live(&self, within: Duration) -> bool {
        now_ms().saturating_sub(self.last_turn_ms.load(Ordering::Relaxed)) <= within.as_millis() as u64
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What readiness depends on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Readiness {
    /// No bootstrap peers configured: this node is the seed of its cluster.
    pub seed: bool,
    pub listening: bool,
    pub connected: bool,
    pub routing_table_size: usize,
    pub shutting_down: bool,
}

impl Readiness {
    pub fn is_ready(self) -> bool {
        let joined = if self.seed {
            // The seed of a cluster is ready as soon as it listens: others join it.
            self.listening
        } else {
            self.connected && self.routing_table_size > 0
        };
        joined && !self.shutting_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Readiness {
        Readiness { seed: false, listening: true, connected: true, routing_table_size: 1, shutting_down: false }
    }

    #[test]
    fn seed_is_ready_once_listening() {
        let seed = Readiness { seed: true, listening: false, connected: false, routing_table_size: 0, ..node() };
        assert!(!seed.is_ready());
        assert!(Readiness { listening: true, ..seed }.is_ready(), "no peers needed: others join it");
    }

    #[test]
    fn joining_node_needs_a_connection_and_a_routing_table() {
        assert!(node().is_ready());
        assert!(!Readiness { connected: false, ..node() }.is_ready());
        assert!(!Readiness { routing_table_size: 0, ..node() }.is_ready());
        assert!(!Readiness { listening: false, connected: false, ..node() }.is_ready(), "listening is not enough");
    }

    #[test]
    fn never_ready_while_shutting_down() {
        assert!(!Readiness { shutting_down: true, ..node() }.is_ready());
        let seed = Readiness { seed: true, shutting_down: true, ..node() };
        assert!(!seed.is_ready());
    }

    #[test]
    fn live_only_within_the_window_after_a_turn() {
        let health = Health::default();
        assert!(!health.is_live(Duration::from_secs(60)), "never turned");
        health.touch();
        assert!(health.is_live(Duration::from_secs(60)));
        health.last_turn_ms.store(now_ms() - 10_000, Ordering::Relaxed);
        assert!(!health.is_live(Duration::from_secs(5)));
        assert!(health.is_live(Duration::from_secs(60)));
    }
}
