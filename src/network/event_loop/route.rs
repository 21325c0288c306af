//! Routing: each command, tick, lane report and swarm event goes to the sub-state that owns
//! it; what they return goes to the outbox. The few decisions that span sub-states (whether
//! a connection is held, who is in the view) are made here from their answers.

use std::time::Instant;

use libp2p::core::ConnectedPoint;
use libp2p::metrics::Recorder;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionError, ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, mdns};

use super::EventLoop;
use crate::membership::Reach;
use crate::metrics::DialCause;
use crate::network::active_view::Standing;
use crate::network::behaviour::BehaviourEvent;
use crate::network::client::Command;
use crate::network::dht::Dht;
use crate::network::event::{NetworkEvent, NetworkStatus};
use crate::network::lanes::LaneEvent;
use crate::network::{peers, relay, view};

impl EventLoop {
    pub(super) fn on_command(&mut self, cmd: Command) {
        let swarm = &mut self.swarm;
        match cmd {
            Command::SendTask { peer, addresses, request } => {
                self.tasks.send(swarm, &self.policy, peer, addresses, request, &mut self.outbox)
            }
            Command::RespondTask { id, response } => self.tasks.respond(swarm, id, response),
            Command::SendProbe { via, target } => self.probes.send(swarm, via, target),
            Command::RespondProbe { id, target, reach } => self.probes.respond(swarm, id, target, reach),
            Command::SendRecords { peer, tag, request } => self.records.send(swarm, peer, tag, request),
            Command::RespondRecords { id, response } => self.records.respond(swarm, id, response),
            Command::Publish { message } => self.gossip.publish(swarm, message),
            Command::PublishLedger { data } => self.gossip.publish_ledger(swarm, data),
            Command::Dial { peer, addresses, cause } => self.dial_for_member(peer, addresses, cause),
            Command::Disconnect { peer } => {
                let _ = swarm.disconnect_peer_id(peer);
            }
            Command::ClusterSize { members } => self.view.set_cluster_size(members),
            Command::Forget { peer } => {
                swarm.behaviour_mut().kad.remove_peer(&peer);
                self.catch_up.held().forget(&peer);
            }
            Command::PutRecord { key, value, replication, reply } => {
                self.dht.put(swarm, key, value, replication, reply)
            }
            Command::GetRecord { key, reply } => self.dht.get(swarm, key, reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Leaving => self.probes.set_leaving(),
            Command::SetAppScore { peer, score } => self.gossip.set_app_score(swarm, peer, score),
            Command::GossipScores { reply } => {
                let _ = reply.send(self.gossip.scores(&self.swarm));
            }
        }
    }

    /// A dial the node asked for (to ping a member, or to send it records); only its failure
    /// is reported.
    fn dial_for_member(&mut self, peer: PeerId, addresses: Vec<Multiaddr>, cause: DialCause) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let opts = self.policy.dial_opts(peer, addresses);
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.metrics.dialed(cause);
                self.probes.dialing(connection);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial not started");
                self.emit(NetworkEvent::DialFailed { peer });
            }
        }
    }

    fn status(&mut self) -> NetworkStatus {
        NetworkStatus {
            listen_addresses: self.swarm.listeners().cloned().collect(),
            external_addresses: self.swarm.external_addresses().cloned().collect(),
            nat: self.relay.nat(),
            connected_peers: self.peers.members().filter(|p| self.swarm.is_connected(p)).count(),
            routing_table_size: Dht::routing_table_size(&mut self.swarm),
            relay_reservations: self.metrics.relay_reservations.get().max(0) as usize,
        }
    }

    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + super::HOUSEKEEPING;
            if self.housekeepings.is_multiple_of(super::SCORES_EVERY) {
                self.gossip.scores(&self.swarm);
            }
            self.housekeepings += 1;
            self.tasks.prune();
            self.trim_view(now);
            self.fill_view(now);
            let (swarm, peers) = (&self.swarm, &self.peers);
            self.catch_up.on_tick(now, || {
                use rand::seq::IteratorRandom;
                swarm.connected_peers().filter(|p| peers.is_member(p)).copied().choose(&mut rand::thread_rng())
            });
        }
        for (index, addr) in self.bootstrap.due(now) {
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%addr, "dialing bootstrap peer");
                    self.metrics.dialed(DialCause::Bootstrap);
                    self.bootstrap.dialing(index, id);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap dial not started");
                    self.bootstrap.dial_not_started(index, now, rand::random());
                }
            }
        }
        self.relay.reserve(&mut self.swarm);
        let (tasks, probes, records) = (&self.tasks, &self.probes, &self.records);
        relay::close_superseded_circuits(&mut self.swarm, &mut self.peers, |p| {
            tasks.busy_with(p) || probes.busy_with(p) || records.busy_with(p)
        });
        let event = self.dht.tick(&mut self.swarm, now, self.view.partial());
        self.emit_some(event);
    }

    /// Whether the connection to `peer` belongs to the active view, `margin` as in `view`.
    fn in_view(&self, peer: &PeerId, margin: f64) -> bool {
        let standing = Standing {
            member: self.peers.is_member(peer),
            hub: self.peers.is_hub(peer) || self.bootstrap.is_bootstrap(peer),
        };
        self.view.keeps(peer, standing, margin)
    }

    /// Closes connections outside the active view that nothing uses: no task, lane or probe
    /// either way, no dial waiting, and older than the grace.
    fn trim_view(&mut self, now: Instant) {
        let keep = |p: &PeerId| {
            self.in_view(p, view::TRIM_MARGIN)
                || self.tasks.holds(p)
                || self.tasks.busy_with(p)
                || self.probes.busy_with(p)
                || self.records.busy_with(p)
        };
        let idle = self.view.idle(now, self.peers.connections(), keep);
        for peer in idle {
            tracing::debug!(%peer, "closing a connection outside the active view");
            self.metrics.connections_trimmed.inc();
            self.peers.mark_closing(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Dials members of the active view from the routing table we are not connected to.
    fn fill_view(&mut self, now: Instant) {
        if !self.view.partial() {
            return;
        }
        let (policy, view) = (self.policy, &self.view);
        // Only the entries the draw keeps (a few of the table) have their addresses copied.
        let known = Dht::entries(&mut self.swarm, |p| view.drawn(p, 1.0))
            .into_iter()
            .map(|(peer, addresses)| (peer, addresses.into_iter().filter(|a| policy.direct_routable(a)).collect()))
            .collect();
        let (swarm, tasks) = (&self.swarm, &self.tasks);
        let due = self.view.dials_due(now, known, |p| swarm.is_connected(p) || tasks.dialing(p));
        for (peer, direct) in due {
            tracing::debug!(%peer, "dialing a member of the active view");
            self.dial(DialOpts::peer_id(peer).addresses(direct).build(), DialCause::View);
        }
    }

    /// Discovery: dial a peer we just learned of at its direct addresses (never through a
    /// relay, see `AddressPolicy::direct_routable`).
    fn maybe_dial(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        let connected = self.swarm.connected_peers().count();
        if !addresses.is_empty() && !self.swarm.is_connected(&peer) && self.view.worth_dialing(&peer, connected) {
            self.dial(DialOpts::peer_id(peer).addresses(addresses).build(), DialCause::Discovery);
        }
    }

    /// Starts a dial counted under `cause`, if the swarm takes it.
    fn dial(&mut self, opts: DialOpts, cause: DialCause) {
        if self.swarm.dial(opts).is_ok() {
            self.metrics.dialed(cause);
        }
    }

    pub(super) fn on_lane_event(&mut self, event: LaneEvent) {
        let member = match &event {
            LaneEvent::Request { peer, .. } => self.peers.is_member(peer),
            _ => false,
        };
        self.tasks.on_lane_event(&mut self.swarm, event, member, &mut self.outbox);
    }

    pub(super) fn on_swarm_event(&mut self, event: libp2p::swarm::SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.on_established(peer_id, connection_id, &endpoint)
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, num_established, .. } => {
                self.on_closed(peer_id, connection_id, num_established, cause.as_ref())
            }
            SwarmEvent::IncomingConnectionError { error: libp2p::swarm::ListenError::Denied { cause }, .. } => {
                peers::count_denied(&self.metrics, &cause);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                self.on_dial_error(connection_id, peer_id, &error)
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                self.relay.on_listener_closed(listener_id, &reason)
            }
            // Only a behaviour's own dials are reported (ours are counted where they start).
            SwarmEvent::Dialing { .. } => self.metrics.dialed(DialCause::Libp2p),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_established(&mut self, peer: PeerId, connection: ConnectionId, endpoint: &ConnectedPoint) {
        let address = endpoint.get_remote_address().clone();
        // The accepting side of a circuit sees only `/p2p/<id>` as the remote address; the
        // endpoint knows either way.
        let relayed = endpoint.is_relayed();
        if self.bootstrap.connected(peer, connection) {
            let learned = endpoint.is_dialer().then(|| address.clone());
            self.dht.on_joined(&mut self.swarm, peer, learned);
        }
        let probe = self.probes.dial_ended(connection);
        let change = self.peers.on_established(peer, connection, relayed);
        self.emit_some(change);
        self.tasks.on_connected(&mut self.swarm, peer, &mut self.outbox);
        let dialer = endpoint.is_dialer();
        tracing::debug!(%peer, %address, relayed, dialer, probe, "connection established");
    }

    fn on_closed(&mut self, peer: PeerId, connection: ConnectionId, remaining: u32, cause: Option<&ConnectionError>) {
        if remaining > 0 {
            let change = self.peers.on_closed(peer, connection);
            return self.emit_some(change);
        }
        // A close both ends expect (outside the active view) is no sign of failure.
        let expected = !self.in_view(&peer, 1.0);
        self.bootstrap.disconnected(peer, Instant::now());
        self.tasks.on_disconnected(&peer);
        let gone = self.peers.on_gone(peer, connection, expected, cause);
        self.emit_some(gone);
    }

    fn on_dial_error(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: &DialError) {
        if let DialError::Denied { cause } = error {
            peers::count_denied(&self.metrics, cause);
        }
        self.bootstrap.dial_failed(connection, Instant::now(), rand::random());
        let Some(peer) = peer else { return };
        if let DialError::WrongPeerId { obtained, address } = error {
            // Someone else answers there (often ourselves, on a shared private address).
            tracing::debug!(%peer, %obtained, %address, "address belongs to another peer; forgetting it");
            self.swarm.behaviour_mut().kad.remove_address(&peer, address);
        } else {
            tracing::debug!(%peer, %error, "dial failed");
        }
        self.tasks.on_dial_failed(&mut self.swarm, peer, connection, error, &mut self.outbox);
        if self.probes.dial_ended(connection) && !self.swarm.is_connected(&peer) {
            self.emit(NetworkEvent::DialFailed { peer });
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(e) => {
                self.libp2p_metrics.record(&e);
                self.on_identify(e);
            }
            BehaviourEvent::Ping(e) => {
                self.libp2p_metrics.record(&e);
                self.on_ping(e);
            }
            BehaviourEvent::Kad(e) => {
                self.libp2p_metrics.record(&e);
                if let Some((peer, addresses)) = self.dht.on_event(&mut self.swarm, e) {
                    let direct = addresses.into_iter().filter(|a| self.policy.direct_routable(a)).collect();
                    self.maybe_dial(peer, direct);
                }
            }
            BehaviourEvent::Gossipsub(e) => {
                self.libp2p_metrics.record(&e);
                let peers = &self.peers;
                let event = self.gossip.on_event(&mut self.swarm, e, |p| peers.is_member(p));
                if let Some(NetworkEvent::Advertisement { from, message }) = &event {
                    for addr in message.addresses.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                        if self.policy.direct_routable(&addr) {
                            Dht::learn_address(&mut self.swarm, from, addr);
                        }
                    }
                }
                self.emit_some(event);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "mDNS discovered");
                    Dht::learn_address(&mut self.swarm, &peer, addr.clone());
                    self.maybe_dial(peer, vec![addr]);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                let event = self.relay.on_nat(&mut self.swarm, new);
                self.emit(event);
            }
            BehaviourEvent::Autonat(_) => {}
            BehaviourEvent::RelayServer(e) => self.libp2p_metrics.record(&e),
            BehaviourEvent::RelayClient(e) => self.relay.on_client_event(e),
            BehaviourEvent::Dcutr(e) => {
                self.libp2p_metrics.record(&e);
                let outcome = if e.result.is_ok() { "success" } else { "failure" };
                tracing::info!(peer = %e.remote_peer_id, outcome, "hole punch finished");
                self.metrics.holepunch.get_or_create(&crate::metrics::OutcomeLabels { outcome }).inc();
            }
            BehaviourEvent::Tasks(e) => {
                let peers = &self.peers;
                self.tasks.on_event(&mut self.swarm, e, |p| peers.is_member(p), &mut self.outbox);
            }
            // libp2p-stream reports nothing: lanes hear from their streams.
            BehaviourEvent::Streams(()) => {}
            BehaviourEvent::Probe(e) => {
                let peers = &self.peers;
                let event = self.probes.on_event(&mut self.swarm, e, |p| peers.is_member(p));
                self.emit_some(event);
            }
            BehaviourEvent::Records(e) => {
                let peers = &self.peers;
                let event = self.records.on_event(e, |p| peers.is_member(p));
                self.emit_some(event);
            }
            BehaviourEvent::Limits(never) | BehaviourEvent::Memory(never) => match never {},
        }
    }

    fn on_ping(&mut self, event: libp2p::ping::Event) {
        if !self.peers.is_member(&event.peer) {
            return;
        }
        match event.result {
            Ok(rtt) => {
                self.metrics.ping_rtt.observe(rtt.as_secs_f64());
                self.emit(NetworkEvent::PingOk { peer: event.peer, rtt });
            }
            // A peer without libp2p's ping protocol is up all the same.
            Err(libp2p::ping::Failure::Unsupported) => {}
            Err(err) => {
                tracing::debug!(peer = %event.peer, error = %err, "ping failed");
                let reach =
                    if matches!(err, libp2p::ping::Failure::Timeout) { Reach::Unknown } else { Reach::Unreachable };
                self.emit(NetworkEvent::PingFailed { peer: event.peer, reach });
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if !self.peers.same_cluster(&info) {
            tracing::info!(peer = %peer_id, theirs = %info.protocol_version, ours = %self.peers.protocol_version(),
                "peer belongs to another cluster; disconnecting");
            peers::count_foreign(&self.metrics);
            self.swarm.behaviour_mut().kad.remove_peer(&peer_id);
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        self.relay.on_identify(peer_id, &info, &self.policy);
        if self.dht.speaks(&info) {
            for addr in info.listen_addrs.iter().filter(|a| self.policy.direct_routable(a)) {
                Dht::learn_address(&mut self.swarm, &peer_id, addr.clone());
            }
        }
        if let Some(connected) = self.peers.admit(peer_id, &info, &self.policy) {
            self.emit(connected);
            self.catch_up.on_member(peer_id, Instant::now());
            // Its GossipSub subscription may have arrived before Identify made it a member, when
            // `Subscribed` was not passed on: pass it on now, so it is sent our advertisement.
            if self.gossip.is_subscribed(&self.swarm, &peer_id) {
                self.emit(NetworkEvent::Subscribed { peer: peer_id });
            }
        }
    }
}
