//! What the core hears and says over gossip: members' heartbeats (with their rumors) and
//! capability advertisements in, to membership and the gateway; ours out, when the
//! [`Advertiser`](super::advertise::Advertiser) says so.

use std::time::Instant;

use libp2p::PeerId;

use super::{Core, advertise};
use crate::membership::{Action, MemberInfo, Rumor};
use crate::metrics::DropReason;
use crate::protocol::{CapabilityAdvertisement, HeartBeat};

impl Core {
    pub(super) fn on_heartbeat(&mut self, now: Instant, from: PeerId, message: HeartBeat) -> Vec<Action<PeerId>> {
        let mut actions = self.membership.on_heartbeat(now, from, message.incarnation, message.state);
        for r in message.rumors {
            if let Ok(peer) = r.peer.parse::<PeerId>() {
                actions
                    .extend(self.membership.on_rumor(now, Rumor { peer, state: r.state, incarnation: r.incarnation }));
            } else {
                self.metrics.dropped(DropReason::RumorBadPeerId);
            }
        }
        actions
    }

    pub(super) fn on_advertisement(
        &mut self,
        now: Instant,
        from: PeerId,
        message: CapabilityAdvertisement,
    ) -> Vec<Action<PeerId>> {
        // Placement sees role, capabilities and capacity; a load-only update (most
        // advertisements) leaves the worker list as it is.
        let known = self.membership.get(&from).and_then(|m| m.info.as_ref());
        if !known.is_some_and(|i| {
            i.role == message.role && i.capabilities == message.capabilities && i.capacity == message.capacity
        }) {
            self.workers_dirty = true;
        }
        let info = MemberInfo {
            role: message.role,
            capabilities: message.capabilities,
            capacity: message.capacity,
            load: message.load,
            addresses: message.addresses,
        };
        let actions = self.membership.on_advertisement(now, from, message.incarnation, info);
        // A worker just became (or stayed) schedulable: queued tasks may go now.
        let workers = self.workers_if_tasks();
        self.gateway.pump(&workers);
        actions
    }

    pub(super) async fn publish_heartbeat(&mut self) {
        let seq = self.advertiser.next_seq();
        let hb = advertise::heartbeat(&self.membership, self.load(), seq);
        let _ = self.network.publish(hb).await;
    }

    pub(super) async fn publish_advertisement(&mut self) {
        let load = self.load();
        self.advertiser.advertised(Instant::now(), load);
        let capacity = self.executor.as_ref().map_or(0, |e| e.capacity());
        let seq = self.advertiser.next_seq();
        let ad = advertise::advertisement(
            &self.membership,
            &self.config.node,
            &self.listen_addresses,
            self.nat,
            capacity,
            load,
            seq,
        );
        let _ = self.network.publish(ad).await;
    }
}
