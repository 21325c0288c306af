//! The node core: one task that owns membership and the gateway, feeds them network events
//! and API requests, and carries out what they decide. Nothing here touches the swarm; it
//! speaks to the network only through `network::Client`. The decisions are made by pure
//! parts (membership, the gateway, [`advertise`], [`probe_forward`], [`views`], readiness in
//! [`super::health`]); this file routes events to them and carries out their effects,
//! [`swim`] carries out membership's, and [`requests`] answers the API.

mod advertise;
mod gossip;
mod ledger;
mod probe_forward;
mod reclaim;
mod records;
mod requests;
mod swim;
mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use self::advertise::Advertiser;
use self::probe_forward::{ProbeEffect, ProbeForwarder};
use super::handle::Request;
use super::health::{Health, Readiness, now_ms};
use crate::config::Config;
use crate::membership::{MemberState, Membership, MembershipConfig, Overlay};
use crate::metrics::{Metrics, PeerLabels, StateLabels};
use crate::network::{Client, InboundId, NatStatus, NetworkEvent, view};
use crate::protocol::{TaskRequest, WIRE_VERSION};
use crate::scheduler::{Effect, Gateway, Timer, WorkerView};
use crate::store::copies::CopyLog;
use crate::store::tasks::{Committed, TaskLog};
use crate::worker::{Executor, LocalAnswer, Origin};

/// Housekeeping period: membership timeouts, readiness. An advertisement falling due wakes
/// the core at its time, not at the next tick. (At 100 ms the ticks of an idle 100-node
/// cluster were 1,000 wake-ups a second; timeouts of a second or more need no finer grain.)
const TICK: Duration = Duration::from_millis(250);
/// Missed heartbeats before a member we only hear through gossip is probed.
const SILENT_HEARTBEATS: u32 = 3;
/// Membership gauges are refreshed every this many ticks, once a second (each refresh walks
/// every member and connection: every 100 ms it was among the top entries of an idle
/// 100-node profile).
const METRICS_EVERY_TICKS: u64 = 4;

struct Conn {
    address: Multiaddr,
    relayed: bool,
    /// From Identify; the advertisement's role wins once it arrives.
    role: Option<String>,
}

pub struct Core {
    config: Arc<Config>,
    local: PeerId,
    /// Our draws with peers (the active view's), remembered: see `view::Draws`.
    draws: view::Draws,
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
    /// Housekeeping ticks so far (see `METRICS_EVERY_TICKS`).
    ticks: u64,
    /// The store's writer reporting commits of the gateway's records.
    committed: mpsc::UnboundedReceiver<Committed>,
    /// Queries for records this node does not hold, asked of the other members.
    lookups: records::Lookups,
    /// The credit ledger (`ledger.enabled`): gossip goes in, payments of completed tasks too.
    ledger: Option<crate::ledger::LedgerHandle>,
    /// Members or connections changed since the ledger was last told whom it may sync with.
    ledger_peers_dirty: bool,
    /// Asks for this node's own records (a peer id that existed before this start).
    reclaim: Option<reclaim::Reclaim>,
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
    pub task_log: TaskLog,
    pub copy_log: CopyLog,
    pub committed: mpsc::UnboundedReceiver<Committed>,
    pub ledger: Option<crate::ledger::LedgerHandle>,
    /// Whether this node's peer id existed before this start: then members may keep records
    /// of its tasks that its own store lacks, and it asks them (`reclaim`).
    pub reclaim: bool,
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
            silence_timeout: p.config.heartbeat_interval() * SILENT_HEARTBEATS,
        };
        let probes =
            ProbeForwarder::new(Duration::from_millis(m.ping_interval_ms), Duration::from_millis(m.probe_timeout_ms));
        // Starting from the wall clock means a restarted node always outranks its old self.
        let incarnation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut gateway =
            Gateway::new(local, p.config.tasks.clone(), p.metrics.clone(), Some(p.task_log), Some(p.copy_log));
        if let Some(ledger) = &p.ledger {
            gateway.set_pricing(ledger::pricing(&p.config, ledger));
        }
        match gateway.restore() {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "resuming the unfinished tasks of the previous run"),
            Err(e) => tracing::error!(error = %e, "cannot read the unfinished tasks of the previous run"),
        }
        let mut membership = Membership::new(local, incarnation, membership_config);
        // The network keeps its active view by this draw; probes ask a member's neighbours in it.
        let links = |a: &PeerId, b: &PeerId, members, active| view::keeps(a, b, members, active, 1.0);
        membership.set_overlay(Overlay { active: p.config.network.active_peers, links });
        Self {
            membership,
            gateway,
            local,
            draws: view::Draws::new(local),
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
            ticks: 0,
            committed: p.committed,
            lookups: records::Lookups::default(),
            ledger: p.ledger,
            ledger_peers_dirty: true,
            reclaim: p.reclaim.then(reclaim::Reclaim::default),
            config: p.config,
        }
    }

    /// Runs until `shutdown` resolves, then leaves the cluster and drains for at most `drain`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>, drain: Duration) {
        let tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(tick);
        // The first heartbeat goes out at once; then every `heartbeat_every`, which stretches
        // with the cluster's size.
        let heartbeat = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(heartbeat);
        // SWIM's protocol period: one member pinged directly per period.
        let mut ping = tokio::time::interval(Duration::from_millis(self.config.membership.ping_interval_ms));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(c) = self.committed.recv() => self.gateway.on_committed(c.seq, c.result),
                Some(answer) = self.local_answers.recv() => self.on_local_answer(answer),
                Some(event) = self.events.recv() => self.on_network_event(event).await,
                Some(request) = self.requests.recv() => self.on_request(request).await,
                Some(timer) = self.gateway.next_timer(), if self.gateway.has_timers() => self.on_gateway_timer(timer),
                () = &mut tick => {
                    // How late our own timer fired is the most direct sign of a starved node.
                    let now = Instant::now();
                    self.membership.on_late(now, now.saturating_duration_since(tick.deadline().into_std()));
                    self.on_tick().await;
                    tick.as_mut().reset((Instant::now() + TICK).into());
                }
                _ = ping.tick() => self.on_protocol_period().await,
                _ = &mut heartbeat => {
                    self.publish_heartbeat().await;
                    self.advertiser.heartbeat_sent(Instant::now());
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + self.heartbeat_every());
                }
                else => break,
            }
            self.apply_effects().await;
            self.gateway.flush();
            // The copies of the batch just flushed go out now, not after the next event.
            self.apply_effects().await;
            // An advertisement due before the next tick (a peer subscribed, our content
            // changed) wakes us at its time.
            if let Some(due) = self.advertiser.due().filter(|due| *due < tick.deadline().into_std()) {
                tick.as_mut().reset(due.into());
            }
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
        let _ = self.network.leaving().await;
        let actions = self.membership.leave(Instant::now());
        self.on_actions(actions).await;
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline
            && (self.gateway.unfinished() > 0 || self.executor.as_ref().is_some_and(|e| e.load() > 0))
        {
            let step = tokio::time::sleep(TICK);
            tokio::select! {
                biased;
                Some(c) = self.committed.recv() => self.gateway.on_committed(c.seq, c.result),
                Some(answer) = self.local_answers.recv() => self.on_local_answer(answer),
                Some(event) = self.events.recv() => self.on_network_event(event).await,
                Some(request) = self.requests.recv() => self.on_request(request).await,
                Some(timer) = self.gateway.next_timer(), if self.gateway.has_timers() => self.on_gateway_timer(timer),
                _ = step => {}
            }
            self.apply_effects().await;
            self.gateway.flush();
            // The copies of the batch just flushed go out now, not after the next event.
            self.apply_effects().await;
            self.health.touch();
        }
        // Unfinished tasks stay in the store as they are: the next start resumes them.
        let left = self.gateway.unfinished();
        if left > 0 {
            tracing::info!(tasks = left, "unfinished tasks kept in the store for the next start");
        }
        self.gateway.flush();
        // Let the last batches commit, so that their submitters and waiters get answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.gateway.holding() {
            match tokio::time::timeout_at(deadline, self.committed.recv()).await {
                Ok(Some(c)) => self.gateway.on_committed(c.seq, c.result),
                _ => break,
            }
        }
    }

    fn on_gateway_timer(&mut self, timer: Timer) {
        let workers = self.workers();
        self.gateway.on_timer(timer, &workers);
    }

    fn on_local_answer(&mut self, answer: LocalAnswer) {
        let workers = self.workers();
        let LocalAnswer { peer, response } = answer;
        let task_id = response.task_id.clone();
        let attempt = response.attempt;
        self.gateway.on_answer(peer, &task_id, attempt, Ok(response), &workers);
        self.advertiser.task_finished(Instant::now());
    }

    /// Carries out what the gateway decided, including what answering a refused local
    /// attempt made it decide in turn.
    async fn apply_effects(&mut self) {
        loop {
            let effects = self.gateway.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                self.apply(effect).await;
            }
        }
    }

    async fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Dispatch { peer, request } => {
                let addresses = self.dial_addresses(&peer);
                let _ = self.network.send_task(peer, addresses, request).await;
            }
            Effect::Replicate { peer, tag, records } => self.replicate(peer, tag, records).await,
            Effect::Pay { task, payments } => self.pay(&task, &payments),
            Effect::Penalize { peer, strikes, score } => {
                tracing::warn!(%peer, strikes, score, "worker outvoted by replicas: its gossip application score is lowered");
                let _ = self.network.set_app_score(peer, score).await;
            }
            Effect::RunLocal { request } => match &self.executor {
                Some(ex) => {
                    if let Some(response) = ex.submit(Origin::Local, request) {
                        self.on_local_answer(LocalAnswer { peer: self.local, response });
                    }
                }
                None => tracing::error!(task_id = %request.task_id, "placed on this node, which is not a worker"),
            },
        }
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

    /// The workers, when the gateway has a task they could concern (queued or running);
    /// otherwise none, and the list is not rebuilt. A cluster forming or churning changes
    /// members hundreds of times a second per node, and each change would rebuild it: at 250
    /// nodes that was a tenth of the process's CPU in formation.
    fn workers_if_tasks(&mut self) -> Arc<[WorkerView]> {
        if self.gateway.queued() > 0 || self.gateway.running() > 0 { self.workers() } else { Arc::from(Vec::new()) }
    }

    /// Alive workers as placement sees them (this node included when it is one).
    fn workers(&mut self) -> Arc<[WorkerView]> {
        if self.workers_dirty {
            self.workers_dirty = false;
            let local = self.executor.as_ref().map(|ex| WorkerView {
                id: self.local,
                capacity: ex.capacity(),
                capabilities: self.config.node.capabilities.clone(),
            });
            self.workers = views::workers(&self.membership, &self.config.security.allowed_workers, local).into();
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
                self.ledger_peers_dirty = true;
                self.mine_connected(peer).await;
                self.membership.on_connected(now, peer)
            }
            NetworkEvent::ConnectionKind { peer, relayed } => {
                if let Some(c) = self.connections.get_mut(&peer) {
                    c.relayed = relayed;
                }
                Vec::new()
            }
            NetworkEvent::PeerDisconnected { peer, failure } => self.on_disconnected(now, peer, failure),
            // A probe's outcome is its direct ping's (which fails too when the dial does), not the dial's.
            NetworkEvent::DialFailed { .. } => Vec::new(),
            NetworkEvent::PingOk { peer, rtt } => self.membership.on_ping(now, peer, rtt),
            NetworkEvent::PingFailed { peer, reach } => self.membership.on_ping_failed(now, peer, reach),
            NetworkEvent::Subscribed { peer } => {
                let has_our_ad = advertise::has_our_advertisement(self.partial_view(), &self.membership, &peer);
                self.advertiser.on_subscribed(now, has_our_ad);
                Vec::new()
            }
            NetworkEvent::HeartBeat { from, message } => self.on_heartbeat(now, from, message),
            NetworkEvent::Advertisement { from, message } => self.on_advertisement(now, from, message),
            NetworkEvent::Ledger { from, message } => {
                self.on_ledger_gossip(from, message);
                Vec::new()
            }
            NetworkEvent::TaskRequested { id, peer, request } => {
                self.on_task_requested(id, peer, request).await;
                Vec::new()
            }
            NetworkEvent::TaskAnswered { peer, task_id, attempt, result } => {
                let workers = self.workers();
                let failed = result.is_err();
                self.gateway.on_answer(peer, &task_id, attempt, result, &workers);
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
            NetworkEvent::ProbeAnswered { via, target, reach, rtt } if via == target => {
                self.on_ping_answered(now, target, reach, rtt).await
            }
            NetworkEvent::ProbeAnswered { via, target, reach, .. } => {
                tracing::debug!(%via, %target, ?reach, "probe answered");
                self.membership.on_probe_result(now, target, reach)
            }
            NetworkEvent::RecordsRequested { id, peer, request } => {
                self.on_records_requested(id, peer, request).await;
                Vec::new()
            }
            NetworkEvent::RecordsAnswered { peer, tag, result } => {
                self.on_records_answered(peer, tag, result).await;
                Vec::new()
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

    async fn on_task_requested(&mut self, id: InboundId, peer: PeerId, request: TaskRequest) {
        match &self.executor {
            Some(ex) => {
                if let Some(response) = ex.submit(Origin::Remote(id, peer), request) {
                    let _ = self.network.respond_task(id, response).await;
                }
            }
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
                    started_ms: None,
                    fuel_used: None,
                };
                let _ = self.network.respond_task(id, response).await;
            }
        }
    }

    /// The interval of our periodic heartbeat at the cluster's current size (see
    /// [`advertise::heartbeat_interval`]).
    fn heartbeat_every(&self) -> Duration {
        advertise::heartbeat_interval(self.config.heartbeat_interval(), self.cluster_size_sent, self.partial_view())
    }

    /// Whether the cluster, at the size last told the network, is larger than the active view.
    fn partial_view(&self) -> bool {
        view::partial(self.cluster_size_sent, self.config.network.active_peers)
    }

    fn load(&self) -> u32 {
        self.executor.as_ref().map_or(0, |e| e.load())
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.health.touch();
        let actions = self.membership.tick(now);
        self.on_actions(actions).await;
        self.gateway.prune(now);
        self.tick_records(now).await;
        if self.advertiser.take_due(now, self.load()) {
            self.publish_advertisement().await;
        }
        let members = 1 + self.membership.count(MemberState::Alive) + self.membership.count(MemberState::Suspect);
        if members != self.cluster_size_sent && self.network.set_cluster_size(members).await.is_ok() {
            self.cluster_size_sent = members;
            self.ledger_peers_dirty = true;
            self.membership.set_silence_timeout(self.heartbeat_every() * SILENT_HEARTBEATS);
        }
        self.update_readiness();
        if self.ticks.is_multiple_of(METRICS_EVERY_TICKS) {
            self.update_metrics();
        }
        self.ticks += 1;
        self.tell_ledger_peers();
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
        for (state, n) in views::member_counts_by_state(&self.membership) {
            self.metrics.members.get_or_create(&StateLabels { state }).set(n as i64);
        }
        for (labels, n) in views::peer_label_counts(&self.membership, &self.connections, &self.peer_labels_seen) {
            self.metrics.peers_connected.get_or_create(&labels).set(n);
            if !self.peer_labels_seen.contains(&labels) {
                self.peer_labels_seen.push(labels);
            }
        }
    }
}
