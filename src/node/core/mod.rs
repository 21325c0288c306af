//! The node core: one task that owns membership and the gateway, feeds them network events
//! and API requests, and carries out what they decide. Nothing here touches the swarm; it
//! speaks to the network only through `network::Client`.

mod advertise;
mod probe_forward;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use self::advertise::Advertiser;
use self::probe_forward::{PingVerdict, ProbeAnswer, ProbeEffect, ProbeForwarder};
use super::health::{Health, Readiness, now_ms};
use super::views::{
    CapabilitiesView, ClusterCapability, LocalCapabilities, MemberCounts, PeerView, Request, StatusView, TaskCounts,
};
use crate::config::Config;
use crate::membership::{Action, MemberInfo, MemberState, Membership, MembershipConfig, Rumor};
use crate::metrics::{Metrics, PeerLabels, StateLabels};
use crate::network::{Client, NatStatus, NetworkEvent, view};
use crate::protocol::WIRE_VERSION;
use crate::scheduler::{Effect, Gateway, WorkerView};
use crate::worker::{Executor, LocalAnswer, Origin};

/// Housekeeping period: membership timeouts, readiness, metrics.
const TICK: Duration = Duration::from_millis(100);

struct Conn {
    address: Multiaddr,
    relayed: bool,
    /// From Identify; the advertisement's role wins once it arrives.
    role: Option<String>,
}

pub struct Core {
    config: Arc<Config>,
    local: PeerId,
    network: Client,
    events: mpsc::Receiver<NetworkEvent>,
    requests: mpsc::Receiver<Request>,
    local_answers: mpsc::Receiver<LocalAnswer>,
    membership: Membership<PeerId>,
    gateway: Gateway,
    executor: Option<Executor>,
    connections: HashMap<PeerId, Conn>,
    listen_addresses: Vec<Multiaddr>,
    nat: NatStatus,
    health: Arc<Health>,
    metrics: Metrics,
    started: Instant,
    /// Cached; rebuilt only when membership or an advertisement changed it.
    workers: Arc<[WorkerView]>,
    workers_dirty: bool,
    advertiser: Advertiser,
    probes: ProbeForwarder,
    routing_table_size: usize,
    /// The cluster size last told the network (it sizes the active view).
    cluster_size_sent: usize,
    peer_labels_seen: Vec<PeerLabels>,
    /// SWIM protocol periods so far: a node in poor local health pings every (1 + score)th.
    ping_periods: u64,
}

pub struct CoreParts {
    pub config: Arc<Config>,
    pub network: Client,
    pub events: mpsc::Receiver<NetworkEvent>,
    pub requests: mpsc::Receiver<Request>,
    pub local_answers: mpsc::Receiver<LocalAnswer>,
    pub executor: Option<Executor>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
}

impl Core {
    pub fn new(p: CoreParts) -> Self {
        let local = p.network.local_peer_id();
        let m = &p.config.membership;
        let membership_config = MembershipConfig {
            suspect_timeout: Duration::from_millis(m.suspect_timeout_ms),
            dead_retention: Duration::from_secs(m.dead_retention_secs),
            indirect_probes: m.indirect_probes,
            probe_timeout: Duration::from_millis(m.probe_timeout_ms),
            // Three missed heartbeats before a member we only hear through gossip is probed.
            silence_timeout: p.config.heartbeat_interval() * 3,
        };
        let probes =
            ProbeForwarder::new(Duration::from_millis(m.ping_interval_ms), Duration::from_millis(m.probe_timeout_ms));
        // Starting from the wall clock means a restarted node always outranks its old self.
        let incarnation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let gateway = Gateway::new(local, p.config.tasks.clone(), p.metrics.clone());
        Self {
            membership: Membership::new(local, incarnation, membership_config),
            gateway,
            local,
            network: p.network,
            events: p.events,
            requests: p.requests,
            local_answers: p.local_answers,
            executor: p.executor,
            connections: HashMap::new(),
            listen_addresses: Vec::new(),
            nat: NatStatus::Unknown,
            health: p.health,
            metrics: p.metrics,
            started: Instant::now(),
            workers: Arc::from(Vec::new()),
            workers_dirty: true,
            advertiser: Advertiser::new(Instant::now(), now_ms()),
            probes,
            routing_table_size: 0,
            cluster_size_sent: 0,
            peer_labels_seen: Vec::new(),
            ping_periods: 0,
            config: p.config,
        }
    }

    /// Runs until `shutdown` resolves, then leaves the cluster and drains for at most `drain`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>, drain: Duration) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SWIM's protocol period: one member pinged directly per period.
        let mut ping = tokio::time::interval(Duration::from_millis(self.config.membership.ping_interval_ms));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(answer) = self.local_answers.recv() => self.on_local_answer(answer),
                Some(event) = self.events.recv() => self.on_network_event(event).await,
                Some(request) = self.requests.recv() => self.on_request(request).await,
                Some(timer) = self.gateway.next_timer(), if self.gateway.has_timers() => {
                    let workers = self.workers();
                    self.gateway.on_timer(timer, &workers);
                }
                due = tick.tick() => {
                    // How late our own timer fired is the most direct sign of a starved node.
                    self.membership.on_late(Instant::now(), due.elapsed());
                    self.on_tick().await;
                }
                _ = ping.tick() => {
                    self.ping_periods += 1;
                    let stretch = u64::from(self.membership.local_health()) + 1;
                    if self.ping_periods.is_multiple_of(stretch)
                        && let Some(target) = self.membership.next_ping(view::partial(self.cluster_size_sent, self.config.network.active_peers))
                    {
                        self.probes.own_ping(target);
                        self.ping(target).await;
                    }
                }
                _ = heartbeat.tick() => {
                    self.publish_heartbeat().await;
                    self.advertiser.heartbeat_sent(Instant::now());
                }
                else => break,
            }
            self.apply_effects().await;
        }
        self.leave(drain).await;
    }

    /// Orderly leave: stop being ready, tell the cluster, let running work finish.
    async fn leave(&mut self, drain: Duration) {
        tracing::info!("leaving the cluster");
        self.health.shutting_down.store(true, Ordering::Relaxed);
        self.health.ready.store(false, Ordering::Relaxed);
        self.metrics.node_ready.set(0);
        if let Some(ex) = &self.executor {
            ex.drain();
        }
        let actions = self.membership.leave(Instant::now());
        self.on_actions(actions).await;
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline
            && (self.gateway.unfinished() > 0 || self.executor.as_ref().is_some_and(|e| e.load() > 0))
        {
            let step = tokio::time::sleep(TICK);
            tokio::select! {
                biased;
                Some(answer) = self.local_answers.recv() => self.on_local_answer(answer),
                Some(event) = self.events.recv() => self.on_network_event(event).await,
                Some(request) = self.requests.recv() => self.on_request(request).await,
                Some(timer) = self.gateway.next_timer(), if self.gateway.has_timers() => {
                    let workers = self.workers();
                    self.gateway.on_timer(timer, &workers);
                }
                _ = step => {}
            }
            self.apply_effects().await;
            self.health.touch();
        }
        self.gateway.abandon_all("shut down before the task finished");
    }

    fn on_local_answer(&mut self, answer: LocalAnswer) {
        let workers = self.workers();
        let LocalAnswer { peer, response } = answer;
        let task_id = response.task_id.clone();
        let attempt = response.attempt;
        self.gateway.on_answer(peer, &task_id, attempt, Ok(response), &workers);
        self.advertiser.task_finished(Instant::now());
    }

    async fn apply_effects(&mut self) {
        for effect in self.gateway.take_effects() {
            match effect {
                Effect::Dispatch { peer, request } => {
                    let addresses = self.dial_addresses(&peer);
                    let _ = self.network.send_task(peer, addresses, request).await;
                }
                Effect::RunLocal { request } => match &self.executor {
                    Some(ex) => ex.submit(Origin::Local, request),
                    None => tracing::error!(task_id = %request.task_id, "placed on this node, which is not a worker"),
                },
            }
        }
    }

    /// `security.allowed_workers`: empty lets any worker execute this gateway's tasks.
    fn may_execute(&self, peer: &PeerId) -> bool {
        let allowed = &self.config.security.allowed_workers;
        allowed.is_empty() || allowed.contains(peer)
    }

    /// Where to dial `peer`: nowhere while connected (no dial is needed, and parsing its
    /// addresses for every task showed up in profiles), else where it last said it can be
    /// reached (behind NAT: its relay circuits only).
    fn dial_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        if self.connections.contains_key(peer) {
            return Vec::new();
        }
        self.membership
            .get(peer)
            .and_then(|m| m.info.as_ref())
            .map(|i| i.addresses.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Alive workers as placement sees them (this node included when it is one).
    fn workers(&mut self) -> Arc<[WorkerView]> {
        if self.workers_dirty {
            self.workers_dirty = false;
            let mut list: Vec<WorkerView> = self
                .membership
                .members()
                .filter(|m| m.state == MemberState::Alive && self.may_execute(&m.id))
                .filter_map(|m| {
                    let info = m.info.as_ref()?;
                    (info.role == "worker").then(|| WorkerView {
                        id: m.id,
                        capacity: info.capacity.max(1),
                        capabilities: info.capabilities.clone(),
                    })
                })
                .collect();
            if let Some(ex) = self.executor.as_ref().filter(|_| self.may_execute(&self.local)) {
                list.push(WorkerView {
                    id: self.local,
                    capacity: ex.capacity(),
                    capabilities: self.config.node.capabilities.clone(),
                });
            }
            self.workers = list.into();
        }
        Arc::clone(&self.workers)
    }

    async fn on_network_event(&mut self, event: NetworkEvent) {
        let now = Instant::now();
        let actions = match event {
            NetworkEvent::Listening(addr) => {
                self.listen_addresses.push(addr);
                self.advertiser.content_changed(now);
                Vec::new()
            }
            NetworkEvent::PeerConnected { peer, address, relayed, role } => {
                self.connections.insert(peer, Conn { address, relayed, role });
                self.membership.on_connected(now, peer)
            }
            NetworkEvent::ConnectionKind { peer, relayed } => {
                if let Some(c) = self.connections.get_mut(&peer) {
                    c.relayed = relayed;
                }
                Vec::new()
            }
            NetworkEvent::PeerDisconnected { peer, failure } => {
                self.connections.remove(&peer);
                if failure {
                    self.membership.on_disconnected(now, peer)
                } else {
                    self.membership.on_parted(peer);
                    Vec::new()
                }
            }
            // A probe's outcome is its direct ping's (which fails too when the dial does), not the dial's.
            NetworkEvent::DialFailed { .. } => Vec::new(),
            NetworkEvent::PingOk { peer, rtt } => self.membership.on_ping(now, peer, rtt),
            NetworkEvent::PingFailed { peer } => self.membership.on_ping_failed(now, peer),
            NetworkEvent::Subscribed { peer } => {
                let partial = view::partial(self.cluster_size_sent, self.config.network.active_peers);
                let has_our_ad = advertise::has_our_advertisement(partial, &self.membership, &peer);
                self.advertiser.on_subscribed(now, has_our_ad);
                Vec::new()
            }
            NetworkEvent::HeartBeat { from, message } => {
                let mut actions = self.membership.on_heartbeat(now, from, message.incarnation, message.state);
                for r in message.rumors {
                    if let Ok(peer) = r.peer.parse::<PeerId>() {
                        actions.extend(
                            self.membership.on_rumor(now, Rumor { peer, state: r.state, incarnation: r.incarnation }),
                        );
                    } else {
                        self.metrics.dropped("rumor_bad_peer_id");
                    }
                }
                actions
            }
            NetworkEvent::Advertisement { from, message } => {
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
                let workers = self.workers();
                self.gateway.pump(&workers);
                actions
            }
            NetworkEvent::TaskRequested { id, peer, request } => {
                match &self.executor {
                    Some(ex) => ex.submit(Origin::Remote(id), request),
                    None => {
                        tracing::debug!(%peer, task_id = %request.task_id, "task sent to a node that is not a worker");
                        let response = crate::protocol::TaskResponse {
                            v: WIRE_VERSION,
                            task_id: request.task_id,
                            attempt: request.attempt,
                            worker: self.local.to_string(),
                            outcome: crate::protocol::TaskOutcome::Err(crate::protocol::TaskError::MissingCapability(
                                "worker".into(),
                            )),
                        };
                        let _ = self.network.respond_task(id, response).await;
                    }
                }
                Vec::new()
            }
            NetworkEvent::TaskAnswered { peer, task_id, attempt, result } => {
                let workers = self.workers();
                let failed = result.is_err();
                self.gateway.on_answer(peer, &task_id, attempt, result.map_err(|e| e.to_string()), &workers);
                if failed { self.membership.on_request_failed(now, peer) } else { Vec::new() }
            }
            NetworkEvent::ProbeRequested { id, request, .. } => {
                match self.probes.on_request(now, id, &request.target, &self.membership) {
                    Some(ProbeEffect::Respond(answer)) => self.answer_probes(vec![answer]).await,
                    Some(ProbeEffect::Ping(target)) => self.ping(target).await,
                    None => {}
                }
                Vec::new()
            }
            NetworkEvent::ProbeAnswered { via, target, reachable, rtt } if via == target => {
                self.on_ping_answered(now, target, reachable, rtt).await
            }
            NetworkEvent::ProbeAnswered { target, reachable, .. } => {
                self.membership.on_probe_result(now, target, reachable)
            }
            NetworkEvent::RoutingTable { size } => {
                self.routing_table_size = size;
                Vec::new()
            }
            NetworkEvent::Nat(status) => {
                self.nat = status;
                // What we advertise depends on it (behind NAT: only relay circuits).
                self.advertiser.content_changed(now);
                Vec::new()
            }
        };
        self.on_actions(actions).await;
    }

    async fn on_actions(&mut self, actions: Vec<Action<PeerId>>) {
        let mut announce = false;
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::PingTimedOut { target } => {
                    let (answers, verdict) = self.probes.ping_ended(target, false);
                    self.answer_probes(answers).await;
                    if verdict == PingVerdict::Failed {
                        queue.extend(self.membership.on_ping_failed(Instant::now(), target));
                    }
                }
                Action::Probe { target, via } => {
                    tracing::debug!(%target, helpers = via.len(), "probing unresponsive member");
                    self.probes.own_ping(target);
                    self.ping(target).await;
                    for helper in via {
                        let _ = self.network.send_probe(helper, target).await;
                    }
                }
                Action::Announce(_) => announce = true,
                Action::StateChanged { peer, from, to } => {
                    self.workers_dirty = true;
                    if peer == self.local {
                        continue;
                    }
                    tracing::info!(%peer, from = from.map(|s| s.as_str()).unwrap_or("new"), to = to.as_str(), "member state changed");
                    match to {
                        MemberState::Dead | MemberState::Left => {
                            let _ = self.network.forget(peer).await;
                            let workers = self.workers();
                            self.gateway.on_worker_lost(peer, to.as_str(), &workers);
                        }
                        MemberState::Alive => {
                            let workers = self.workers();
                            self.gateway.pump(&workers);
                        }
                        MemberState::Suspect => {}
                    }
                }
            }
        }
        if announce {
            // Suspicions and refutations must spread now, not at the next heartbeat.
            self.publish_heartbeat().await;
        }
    }

    /// A direct ping: a probe request to the member about itself, answered as
    /// `ProbeAnswered { via: target, .. }`. Not connected, it is dialed at the addresses it
    /// advertised (behind NAT, its relay circuits) as well as any the network knows.
    async fn ping(&mut self, target: PeerId) {
        self.membership.ping_sent(Instant::now(), target);
        let addresses = self.dial_addresses(&target);
        if !addresses.is_empty() {
            let _ = self.network.dial(target, addresses).await;
        }
        if self.network.send_probe(target, target).await.is_err() {
            // The network is gone: nobody will ever answer those waiting for this ping.
            let answers = self.probes.answers(target, false);
            self.answer_probes(answers).await;
        }
    }

    /// Our direct ping: answer whoever asked us about the target, then judge it.
    async fn on_ping_answered(
        &mut self,
        now: Instant,
        target: PeerId,
        reachable: bool,
        rtt: Duration,
    ) -> Vec<Action<PeerId>> {
        let (answers, verdict) = self.probes.ping_ended(target, reachable);
        self.answer_probes(answers).await;
        match verdict {
            PingVerdict::Answered => self.membership.on_ping(now, target, rtt),
            PingVerdict::Failed => self.membership.on_ping_failed(now, target),
            PingVerdict::NotOurs => Vec::new(),
        }
    }

    async fn answer_probes(&self, answers: Vec<ProbeAnswer>) {
        for ProbeAnswer { id, target, reachable } in answers {
            let _ = self.network.respond_probe(id, target, reachable).await;
        }
    }

    async fn publish_heartbeat(&mut self) {
        let seq = self.advertiser.next_seq();
        let hb = advertise::heartbeat(&self.membership, self.load(), seq);
        let _ = self.network.publish(hb).await;
    }

    fn load(&self) -> u32 {
        self.executor.as_ref().map_or(0, |e| e.load())
    }

    async fn publish_advertisement(&mut self) {
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

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.health.touch();
        let actions = self.membership.tick(now);
        self.on_actions(actions).await;
        self.gateway.prune(now);

        if self.advertiser.take_due(now, self.load()) {
            self.publish_advertisement().await;
        }

        let members = 1 + self.membership.count(MemberState::Alive) + self.membership.count(MemberState::Suspect);
        if members != self.cluster_size_sent && self.network.set_cluster_size(members).await.is_ok() {
            self.cluster_size_sent = members;
        }
        self.update_readiness();
        self.update_metrics();
    }

    fn update_readiness(&mut self) {
        let ready = Readiness {
            seed: self.config.network.bootstrap_peers.is_empty(),
            listening: !self.listen_addresses.is_empty(),
            connected: !self.connections.is_empty(),
            routing_table_size: self.routing_table_size,
            shutting_down: self.health.shutting_down.load(Ordering::Relaxed),
        }
        .is_ready();
        if self.health.ready.swap(ready, Ordering::Relaxed) != ready {
            tracing::info!(
                ready,
                peers = self.connections.len(),
                routing_table = self.routing_table_size,
                "readiness changed"
            );
        }
        self.metrics.node_ready.set(i64::from(ready));
    }

    fn update_metrics(&mut self) {
        let health = i64::from(self.membership.local_health());
        let before = self.metrics.local_health.set(health);
        if (before == 0) != (health == 0) {
            tracing::info!(score = health, "local health changed: failure-detection timeouts stretch by 1 + score");
        }
        for (state, n) in self.member_counts_by_state() {
            self.metrics.members.get_or_create(&StateLabels { state }).set(n as i64);
        }
        let mut counts: HashMap<PeerLabels, i64> = self.peer_labels_seen.iter().map(|l| (l.clone(), 0)).collect();
        for (peer, conn) in &self.connections {
            let role = self.role_of(peer);
            let labels = PeerLabels { role, transport: if conn.relayed { "relayed" } else { "direct" }.into() };
            *counts.entry(labels).or_default() += 1;
        }
        for (labels, n) in counts {
            self.metrics.peers_connected.get_or_create(&labels).set(n);
            if !self.peer_labels_seen.contains(&labels) {
                self.peer_labels_seen.push(labels);
            }
        }
    }

    /// A peer's role: from its advertisement, else from Identify, else unknown.
    fn role_of(&self, peer: &PeerId) -> String {
        self.membership
            .get(peer)
            .and_then(|m| m.info.as_ref())
            .map(|i| i.role.clone())
            .or_else(|| self.connections.get(peer).and_then(|c| c.role.clone()))
            .unwrap_or_else(|| "unknown".into())
    }

    fn member_counts_by_state(&self) -> [(&'static str, usize); 4] {
        [
            ("alive", self.membership.count(MemberState::Alive)),
            ("suspect", self.membership.count(MemberState::Suspect)),
            ("dead", self.membership.count(MemberState::Dead)),
            ("left", self.membership.count(MemberState::Left)),
        ]
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit { spec, waiter, reply } => {
                if self.health.shutting_down.load(Ordering::Relaxed) {
                    let _ = reply.send(Err(crate::scheduler::SubmitError::ShuttingDown));
                    return;
                }
                let workers = self.workers();
                let result = self.gateway.submit(spec, &workers);
                if let (Ok(id), Some(waiter)) = (&result, waiter) {
                    let _ = self.gateway.wait(id, waiter);
                }
                let _ = reply.send(result);
            }
            Request::SubmitBatch { specs, waiters, reply } => {
                if self.health.shutting_down.load(Ordering::Relaxed) {
                    let _ = reply.send(Err((0, crate::scheduler::SubmitError::ShuttingDown)));
                    return;
                }
                let workers = self.workers();
                let result = self.gateway.submit_batch(specs, &workers);
                if let Ok(ids) = &result {
                    for (id, waiter) in ids.iter().zip(waiters) {
                        let _ = self.gateway.wait(id, waiter);
                    }
                }
                let _ = reply.send(result);
            }
            Request::Get { id, reply } => {
                let _ = reply.send(self.gateway.get(&id));
            }
            Request::List { limit, reply } => {
                let _ = reply.send(self.gateway.list(limit));
            }
            Request::Cancel { id, reply } => {
                let result = self.gateway.cancel(&id);
                let _ = reply.send(result);
            }
            Request::Peers { reply } => {
                let scores = self.network.gossip_scores().await.unwrap_or_default();
                let _ = reply.send(self.peers(&scores));
            }
            Request::Status { reply } => {
                let status = self.status().await;
                let _ = reply.send(status);
            }
            Request::Capabilities { reply } => {
                let _ = reply.send(self.capabilities());
            }
        }
    }

    fn peers(&self, gossip_scores: &HashMap<PeerId, f64>) -> Vec<PeerView> {
        let mut peers: Vec<PeerView> = self
            .membership
            .members()
            .map(|m| {
                let conn = self.connections.get(&m.id);
                let info = m.info.as_ref();
                let mut addresses: Vec<String> = info.map(|i| i.addresses.clone()).unwrap_or_default();
                if let Some(c) = conn {
                    let a = c.address.to_string();
                    if !addresses.contains(&a) {
                        addresses.insert(0, a);
                    }
                }
                PeerView {
                    peer_id: m.id.to_string(),
                    role: self.role_of(&m.id),
                    state: m.state.as_str().into(),
                    incarnation: m.incarnation,
                    addresses,
                    connection: match conn {
                        Some(c) if c.relayed => "relayed",
                        Some(_) => "direct",
                        None => "none",
                    }
                    .into(),
                    rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    capabilities: info.map(|i| i.capabilities.clone()).unwrap_or_default(),
                    load: info.map_or(0, |i| i.load),
                    capacity: info.map_or(0, |i| i.capacity),
                    gossip_score: gossip_scores.get(&m.id).copied(),
                }
            })
            .collect();
        peers.sort_by(|a, b| (a.role.as_str(), a.peer_id.as_str()).cmp(&(b.role.as_str(), b.peer_id.as_str())));
        peers
    }

    async fn status(&mut self) -> StatusView {
        let net = self.network.status().await.ok();
        let counts = self.member_counts_by_state();
        StatusView {
            peer_id: self.local.to_string(),
            role: self.config.node.role.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: self.config.network.protocol_version.clone(),
            listen_addresses: net
                .as_ref()
                .map(|n| n.listen_addresses.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            external_addresses: net
                .as_ref()
                .map(|n| n.external_addresses.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            nat_status: self.nat.as_str().into(),
            connected_peers: net.as_ref().map_or(self.connections.len(), |n| n.connected_peers),
            members: MemberCounts { alive: counts[0].1, suspect: counts[1].1, dead: counts[2].1, left: counts[3].1 },
            routing_table_size: net.as_ref().map_or(self.routing_table_size, |n| n.routing_table_size),
            local_health: self.membership.local_health(),
            uptime_secs: self.started.elapsed().as_secs(),
            ready: self.health.ready.load(Ordering::Relaxed),
            tasks: TaskCounts {
                queued: self.gateway.queued(),
                running: self.gateway.running(),
                executing: self.load(),
            },
        }
    }

    fn capabilities(&self) -> CapabilitiesView {
        let mut cluster: BTreeMap<String, ClusterCapability> = BTreeMap::new();
        let mut add = |cap: &str, peer: String, alive: bool| {
            let entry =
                cluster.entry(cap.to_string()).or_insert(ClusterCapability { alive_workers: 0, workers: Vec::new() });
            if alive {
                entry.alive_workers += 1;
            }
            entry.workers.push(peer);
        };
        for m in self.membership.members() {
            if let Some(info) = &m.info {
                for cap in &info.capabilities {
                    add(cap, m.id.to_string(), m.state == MemberState::Alive);
                }
            }
        }
        for cap in &self.config.node.capabilities {
            add(cap, self.local.to_string(), true);
        }
        CapabilitiesView {
            local: LocalCapabilities {
                capabilities: self.config.node.capabilities.clone(),
                capacity: self.executor.as_ref().map_or(0, |e| e.capacity()),
                load: self.load(),
            },
            cluster,
        }
    }
}
