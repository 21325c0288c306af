//! The core's side of the credit ledger: what tasks cost (the gateway's pricing, with the
//! ledger as its funds), payments of completed tasks handed over, ledger gossip passed on, and
//! the members anti-entropy may ask.

use std::sync::Arc;

use libp2p::PeerId;

use super::Core;
use crate::config::Config;
use crate::ledger::LedgerHandle;
use crate::ledger::wire::Gossiped;
use crate::scheduler::payment::{Funds, Pricing};

/// The gateway's prices, with `ledger` as the funds `ledger.enforce` checks.
pub(super) fn pricing(config: &Config, ledger: &LedgerHandle) -> Pricing {
    let funds: Arc<dyn Funds> = Arc::new(ledger.clone());
    Pricing::new(&config.ledger, config.wasm.max_fuel, funds)
}

impl Core {
    pub(super) fn pay(&self, task: &str, payments: &[(PeerId, u64)]) {
        if let Some(ledger) = &self.ledger {
            ledger.pay(task, payments);
        }
    }

    pub(super) fn on_ledger_gossip(&self, from: PeerId, message: Gossiped) {
        if let Some(ledger) = &self.ledger {
            ledger.on_gossip(from, message);
        }
    }

    /// Tells the ledger whom anti-entropy may ask, when members or connections changed: only
    /// members connected and in the active view, so that a round neither opens a connection
    /// outside the view nor keeps one the view trims.
    pub(super) fn tell_ledger_peers(&mut self) {
        if !std::mem::take(&mut self.ledger_peers_dirty) {
            return;
        }
        let Some(ledger) = &self.ledger else { return };
        let (members, active) = (self.cluster_size_sent, self.config.network.active_peers);
        let peers = self
            .alive_members()
            .into_iter()
            .filter(|p| self.connections.contains_key(p) && self.draws.keeps(p, members, active, 1.0))
            .collect();
        ledger.set_members(peers);
    }
}
