//! SWIM in the core: carrying out what membership decides (pings, probes through helpers,
//! announcements, state changes) and feeding it the network's answers. The decisions are
//! membership's and [`super::probe_forward`]'s; this file routes and sends.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Core;
use super::probe_forward::{PingVerdict, ProbeAnswer};
use crate::membership::{Action, MemberState, Reach};
use crate::metrics::{DialCause, TransitionLabels};

impl Core {
    pub(super) fn on_disconnected(&mut self, now: Instant, peer: PeerId, failure: bool) -> Vec<Action<PeerId>> {
        self.connections.remove(&peer);
        self.ledger_peers_dirty = true;
        if failure {
            self.membership.on_disconnected(now, peer)
        } else {
            self.membership.on_parted(peer);
            Vec::new()
        }
    }

    /// Our direct ping: answer whoever asked us about the target, then judge it.
    pub(super) async fn on_ping_answered(
        &mut self,
        now: Instant,
        target: PeerId,
        reach: Reach,
        rtt: Duration,
    ) -> Vec<Action<PeerId>> {
        let (answers, verdict) = self.probes.ping_ended(target, reach);
        self.answer_probes(answers).await;
        match verdict {
            PingVerdict::Answered => self.membership.on_ping(now, target, rtt),
            PingVerdict::Failed(reach) => self.membership.on_ping_failed(now, target, reach),
            PingVerdict::NotOurs => Vec::new(),
        }
    }

    pub(super) async fn answer_probes(&self, answers: Vec<ProbeAnswer>) {
        for ProbeAnswer { id, target, reach } in answers {
            let _ = self.network.respond_probe(id, target, reach).await;
        }
    }

    pub(super) async fn on_actions(&mut self, actions: Vec<Action<PeerId>>) {
        let mut announce = false;
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::PingTimedOut { target } => {
                    let (answers, verdict) = self.probes.ping_ended(target, Reach::Unknown);
                    self.answer_probes(answers).await;
                    if let PingVerdict::Failed(reach) = verdict {
                        queue.extend(self.membership.on_ping_failed(Instant::now(), target, reach));
                    }
                }
                Action::Probe { target, via } => {
                    tracing::debug!(%target, helpers = via.len(), "probing unresponsive member");
                    self.metrics.probes.inc();
                    self.probes.own_ping(target);
                    self.ping(target).await;
                    for helper in via {
                        let _ = self.network.send_probe(helper, target).await;
                    }
                }
                Action::Announce(rumor) => {
                    // Only a refutation announces this node alive (joins and leaves go otherwise).
                    if rumor.peer == self.membership.local() && rumor.state == MemberState::Alive {
                        self.metrics.refutations.inc();
                        // Our advertisement names our incarnation: the old one is stale now.
                        self.advertiser.content_changed(Instant::now());
                    }
                    announce = true;
                }
                Action::StateChanged { peer, from, to } => self.on_state_changed(peer, from, to).await,
            }
        }
        if announce {
            // Suspicions and refutations must spread now, not at the next heartbeat.
            self.publish_heartbeat().await;
        }
    }

    async fn on_state_changed(&mut self, peer: PeerId, from: Option<MemberState>, to: MemberState) {
        self.workers_dirty = true;
        if peer == self.local {
            return;
        }
        let from = from.map_or("new", |s| s.as_str());
        tracing::info!(%peer, from, to = to.as_str(), "member state changed");
        self.metrics.member_transitions.get_or_create(&TransitionLabels { from, to: to.as_str() }).inc();
        self.gateway.set_members(self.alive_members());
        self.ledger_peers_dirty = true;
        match to {
            MemberState::Dead | MemberState::Left => {
                let _ = self.network.forget(peer).await;
                let workers = self.workers_if_tasks();
                self.gateway.on_worker_lost(peer, to.as_str(), &workers);
                self.gateway.on_member_lost(peer);
                self.gateway.owner_lost(peer, Instant::now());
            }
            MemberState::Alive => {
                self.ask_mine(peer).await;
                self.gateway.owner_back(&peer);
                let workers = self.workers_if_tasks();
                self.gateway.pump(&workers);
            }
            MemberState::Suspect => {}
        }
    }

    /// One SWIM protocol period: ping the next member, unless poor local health stretches
    /// the period.
    pub(super) async fn on_protocol_period(&mut self) {
        self.ping_periods += 1;
        let stretch = u64::from(self.membership.local_health()) + 1;
        if self.ping_periods.is_multiple_of(stretch)
            && let Some(target) = self.membership.next_ping(self.partial_view())
        {
            self.probes.own_ping(target);
            self.ping(target).await;
        }
    }

    /// A direct ping: a probe request to the member about itself, answered as
    /// `ProbeAnswered { via: target, .. }`. Not connected, it is dialed at the addresses it
    /// advertised (behind NAT, its relay circuits) as well as any the network knows.
    pub(super) async fn ping(&mut self, target: PeerId) {
        self.membership.ping_sent(Instant::now(), target);
        let addresses = self.dial_addresses(&target);
        if !addresses.is_empty() {
            let _ = self.network.dial(target, addresses, DialCause::Ping).await;
        }
        if self.network.send_probe(target, target).await.is_err() {
            // The network is gone: nobody will ever answer those waiting for this ping.
            let answers = self.probes.answers(target, Reach::Unknown);
            self.answer_probes(answers).await;
        }
    }
}
