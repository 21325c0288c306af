//! The one task that owns the `Swarm`: it turns commands into swarm calls and swarm events
//! into `NetworkEvent`s, keeps the bootstrap connections alive and runs discovery walks.
//!
//! It never blocks on the application: events wait in a bounded outbox, and while the
//! outbox is full the swarm is not polled (backpressure on the network), but commands are
//! still drained, so the application can never deadlock against it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, gossipsub, identify, kad, mdns, relay};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::discovery::Bootstrapper;
use super::lanes::{self, LaneEvent, NotQueued, OutboundLane};
use super::swarm::{KAD_K, ProtocolNames};
use super::view;
use super::{Command, DispatchError, InboundId, NatStatus, NetworkEvent, NetworkStatus};
use crate::config::{Config, Role};
use crate::metrics::Metrics;
use crate::protocol::{GossipMessage, ProbeRequest, ProbeResponse, TaskError, TaskRequest, TaskResponse, WIRE_VERSION};

/// Events waiting for the application; the swarm is not polled while this many wait.
const OUTBOX_LIMIT: usize = 1024;
/// Interval of the housekeeping tick (bootstrap redials).
const TICK: Duration = Duration::from_millis(100);
/// Random walks find peers nobody told us about; frequent at first, then relaxed.
const WALK_FAST: Duration = Duration::from_secs(2);
const WALK_SLOW: Duration = Duration::from_secs(30);
const FAST_WALKS: u32 = 5;
/// In a cluster larger than the active view a walk's lookups mostly reach peers we are not
/// connected to, each a connection's handshake that is closed again: walk rarely, membership
/// gossip already names every member.
const WALK_PARTIAL_VIEW: Duration = Duration::from_secs(300);
/// Kademlia's bootstrap (a lookup of our own id, then one per bucket: about 200 requests at
/// 100 nodes) refreshes the routing table this often; in a cluster larger than the active
/// view, as rarely as libp2p's default, for the reason above.
const REFRESH: Duration = Duration::from_secs(60);
const REFRESH_PARTIAL_VIEW: Duration = Duration::from_secs(300);
/// Relays a node behind NAT holds reservations on.
const MAX_RELAYS: usize = 2;
/// How long a stopping node keeps its swarm running to flush its last messages.
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_millis(200);
/// Dial newly discovered peers while below this share of `max_connections`.
const DIAL_SHARE: f64 = 0.8;
/// Tasks that may wait for the connection to one peer; the gateway's own bound (the
/// worker's capacity) normally keeps far below it.
const MAX_TASKS_AWAITING_DIAL: usize = 1024;
/// A connection outside the active view (see `view`) is closed once idle and this old: time
/// for the ping or lookup it was made for.
const TRANSIENT_GRACE: Duration = Duration::from_secs(10);
/// A member of the active view we are not connected to is dialed at most this often.
const VIEW_REDIAL: Duration = Duration::from_secs(30);
/// Dials started per second to fill the active view.
const VIEW_DIALS_PER_SEC: usize = 4;

/// Where the answer to a task request we hold goes back.
enum Replier {
    /// Request-response: the request's own stream.
    Stream(ResponseChannel<TaskResponse>),
    /// A task lane the requester opened.
    Lane(lanes::Reply),
}

/// Where the answer to a DHT get goes.
type GetReply = oneshot::Sender<Result<Option<Vec<u8>>, String>>;

struct Connection {
    id: ConnectionId,
    relayed: bool,
    /// We asked the swarm to close it (a relayed one a direct connection replaced).
    closing: bool,
    since: Instant,
}

/// Tasks for a peer we are not connected to, held until the dial started for them ends.
struct TaskDial {
    connection: ConnectionId,
    tasks: Vec<TaskRequest>,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// This node's key: gossip is sealed with it.
    signing_key: Keypair,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    outbox: VecDeque<NetworkEvent>,
    names: ProtocolNames,
    protocol_version: String,
    role: Role,
    /// Task requests per peer per second (`limits.task_requests_per_peer_per_sec`).
    task_rate: Option<governor::DefaultKeyedRateLimiter<PeerId>>,
    /// Next refresh of the gossip score gauge and pruning of idle rate-limit state.
    next_housekeeping: Instant,
    /// Peers that may send tasks here (`security.allowed_submitters`); `None`: any member.
    allowed_submitters: Option<HashSet<PeerId>>,
    max_connections: u32,
    heartbeat_topic: gossipsub::IdentTopic,
    capabilities_topic: gossipsub::IdentTopic,
    metrics: Metrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    bootstrap: Bootstrapper,
    connections: HashMap<PeerId, Vec<Connection>>,
    /// Peers that passed the Identify check (same cluster); only they reach the application.
    members: HashSet<PeerId>,
    /// Members whose role is bootstrap or relay: always in the active view.
    hubs: HashSet<PeerId>,
    /// Cluster members the application counts (ourselves included); 0 until it says.
    cluster_size: usize,
    /// `network.active_peers`: the size of the active view.
    active_peers: usize,
    /// When we last dialed a member of the active view we were not connected to.
    view_dials: HashMap<PeerId, Instant>,
    next_inbound: u64,
    /// Replies we owe, with the peer that asked.
    pending_task_replies: HashMap<InboundId, (PeerId, Replier)>,
    pending_probe_replies: HashMap<InboundId, (PeerId, ResponseChannel<ProbeResponse>)>,
    outbound_tasks: HashMap<OutboundRequestId, (PeerId, String, u32)>,
    /// Probe requests in flight: the helper asked (the member itself for a direct ping), the
    /// member it was asked about, and when.
    outbound_probes: HashMap<OutboundRequestId, (PeerId, PeerId, Instant)>,
    pending_puts: HashMap<kad::QueryId, oneshot::Sender<Result<usize, String>>>,
    pending_gets: HashMap<kad::QueryId, GetReply>,
    nat: NatStatus,
    relay_client_enabled: bool,
    /// Loopback addresses are only good within a cluster that lives on loopback; elsewhere
    /// dialing one reaches whoever listens on this host (ourselves, usually).
    loopback_ok: bool,
    /// Peers a task dial is under way to (one at a time, not one per queued task), and the
    /// tasks waiting for it. Requests are handed to request-response only once connected:
    /// it fails every request it holds for a peer on *any* failed dial to that peer (a
    /// hole-punch attempt, a DHT query's dial), not just on the dial made for them.
    task_dials: HashMap<PeerId, TaskDial>,
    /// Dials `Client::dial` asked for (membership probes); only their failures are reported.
    probe_dials: HashMap<ConnectionId, PeerId>,
    /// Addresses were given in the configuration: the node is reachable there, so it does not
    /// hold a relay reservation while AutoNAT is still undecided.
    external_configured: bool,
    /// Relays we know (Identify says they serve the hop protocol) and how we reach them.
    relays: HashMap<PeerId, Multiaddr>,
    /// Circuit listeners (reservations) per relay.
    reservations: HashMap<PeerId, libp2p::core::transport::ListenerId>,
    walks: u32,
    next_walk: Instant,
    /// The last Kademlia bootstrap (routing-table refresh, or the one on joining); see `REFRESH`.
    last_refresh: Instant,
    joined_once: bool,
    /// Opens task lanes and registers the protocol we serve them on.
    streams: libp2p_stream::Control,
    /// The lane to each worker we sent tasks to, while it lasts.
    lanes: HashMap<PeerId, OutboundLane>,
    /// Workers that speak no task lanes (an older version): tasks go by request-response.
    legacy_task_peers: HashSet<PeerId>,
    /// Lanes' requests and verdicts, and the sender lanes get a copy of.
    lane_events: mpsc::Receiver<LaneEvent>,
    lane_events_tx: mpsc::Sender<LaneEvent>,
    /// The routing table's size last reported to the application.
    routing_table_reported: Option<usize>,
    /// Unanswered requests one inbound lane may hold (`limits.max_task_streams`).
    lane_credit: usize,
    /// Lanes peers hold open to us.
    inbound_lanes: lanes::InboundLanes,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        signing_key: Keypair,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
        config: &Config,
        metrics: Metrics,
        libp2p_metrics: libp2p::metrics::Metrics,
    ) -> Self {
        let names = ProtocolNames::new(&config.network.protocol_version);
        let [heartbeat_topic, capabilities_topic] = super::swarm::gossip_topics(&names);
        metrics.set_nat(NatStatus::Unknown.as_str());
        let streams = swarm.behaviour().streams.new_control();
        let (lane_events_tx, lane_events) = mpsc::channel(super::COMMAND_CHANNEL);
        Self {
            swarm,
            signing_key,
            commands,
            events,
            outbox: VecDeque::new(),
            names,
            protocol_version: config.network.protocol_version.clone(),
            role: config.node.role,
            task_rate: std::num::NonZeroU32::new(config.limits.task_requests_per_peer_per_sec)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n))),
            allowed_submitters: (!config.security.allowed_submitters.is_empty())
                .then(|| config.security.allowed_submitters.iter().copied().collect()),
            max_connections: config.node.max_connections,
            heartbeat_topic,
            capabilities_topic,
            metrics,
            libp2p_metrics,
            bootstrap: Bootstrapper::new(&config.network.bootstrap_peers, Instant::now()),
            connections: HashMap::new(),
            members: HashSet::new(),
            hubs: HashSet::new(),
            cluster_size: 0,
            view_dials: HashMap::new(),
            active_peers: config.network.active_peers,
            next_inbound: 0,
            pending_task_replies: HashMap::new(),
            pending_probe_replies: HashMap::new(),
            outbound_tasks: HashMap::new(),
            outbound_probes: HashMap::new(),
            pending_puts: HashMap::new(),
            pending_gets: HashMap::new(),
            nat: NatStatus::Unknown,
            relay_client_enabled: config.network.enable_relay,
            loopback_ok: config.node.listen_address.is_loopback(),
            task_dials: HashMap::new(),
            probe_dials: HashMap::new(),
            external_configured: !config.node.external_addresses.is_empty(),
            relays: HashMap::new(),
            reservations: HashMap::new(),
            walks: 0,
            next_walk: Instant::now() + WALK_FAST,
            last_refresh: Instant::now(),
            joined_once: false,
            next_housekeeping: Instant::now(),
            streams,
            lanes: HashMap::new(),
            legacy_task_peers: HashSet::new(),
            lane_events,
            lane_events_tx,
            routing_table_reported: None,
            lane_credit: config.limits.max_task_streams,
            inbound_lanes: Default::default(),
        }
    }

    /// Runs until `shutdown` resolves or every `Client` is dropped, then closes all
    /// connections so peers see an orderly leave.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        if let Some(gs) = self.swarm.behaviour_mut().gossipsub.as_mut() {
            for topic in [&self.heartbeat_topic, &self.capabilities_topic] {
                if let Err(e) = gs.subscribe(topic) {
                    tracing::error!(%topic, error = %e, "cannot subscribe to gossip topic");
                }
            }
        }
        match self.streams.accept(self.names.task_lane.clone()) {
            Ok(incoming) => {
                let (back, metrics, open) =
                    (self.lane_events_tx.clone(), self.metrics.clone(), self.inbound_lanes.clone());
                let lanes = lanes::accept(incoming, back, metrics, self.lane_credit, open);
                tokio::spawn(lanes);
            }
            Err(e) => tracing::error!(error = %e, "cannot serve task lanes"),
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let events = self.events.clone();
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(event) = self.lane_events.recv(), if self.outbox.len() < OUTBOX_LIMIT => self.on_lane_event(event),
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.outbox.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => break,
                },
                _ = tick.tick() => self.on_tick(),
                event = self.swarm.select_next_some(), if self.outbox.len() < OUTBOX_LIMIT => {
                    self.on_swarm_event(event);
                }
            }
        }
        // Carry out what the application asked for before it told us to stop (its farewell
        // heartbeat above all), and give the swarm a moment to put those bytes on the wire.
        while let Ok(cmd) = self.commands.try_recv() {
            self.on_command(cmd);
        }
        let _ = tokio::time::timeout(FLUSH_BEFORE_CLOSE, async {
            loop {
                let event = self.swarm.select_next_some().await;
                self.libp2p_metrics.record(&event);
            }
        })
        .await;
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        tracing::info!(peers = peers.len(), "closing connections");
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // Let the close frames go out before the runtime drops the sockets.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            while self.swarm.connected_peers().next().is_some() {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    fn emit(&mut self, event: NetworkEvent) {
        self.outbox.push_back(event);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + Duration::from_secs(1);
            self.gossip_scores();
            if let Some(rate) = &self.task_rate {
                rate.retain_recent();
            }
            self.trim_view(now);
            self.fill_view(now);
        }
        for (index, addr) in self.bootstrap.due(now) {
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%addr, "dialing bootstrap peer");
                    self.bootstrap.dialing(index, id);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap dial not started");
                    self.bootstrap.dial_not_started(index, now, rand::random());
                }
            }
        }
        self.reserve_relay_slots();
        self.close_superseded_circuits();
        if now >= self.next_walk && self.swarm.connected_peers().next().is_some() {
            self.walks += 1;
            let interval = match self.walks {
                w if w < FAST_WALKS => WALK_FAST,
                _ if view::partial(self.cluster_size, self.active_peers) => WALK_PARTIAL_VIEW,
                _ => WALK_SLOW,
            };
            self.next_walk = now + interval;
            // A lookup of a random id visits peers all over the key space, filling the routing
            // table with peers we were never told about.
            self.swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
        }
        let size = self.routing_table_size();
        if self.routing_table_reported != Some(size) {
            self.routing_table_reported = Some(size);
            self.emit(NetworkEvent::RoutingTable { size });
        }
        let refresh = if view::partial(self.cluster_size, self.active_peers) { REFRESH_PARTIAL_VIEW } else { REFRESH };
        if now.duration_since(self.last_refresh) >= refresh && self.swarm.connected_peers().next().is_some() {
            self.last_refresh = now;
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Whether to listen through relays. Behind NAT, yes. While AutoNAT is still undecided
    /// (its first verdict takes tens of seconds) a worker that was told no public address of
    /// its own may well be an edge worker behind NAT: holding a reservation meanwhile makes it
    /// reachable at once, and it is given back if AutoNAT finds the node public. A node on
    /// loopback shares its host with the whole cluster and needs no relay.
    fn wants_relay_reservation(&self) -> bool {
        self.relay_client_enabled
            && match self.nat {
                NatStatus::Private => true,
                NatStatus::Unknown => self.role == Role::Worker && !self.external_configured && !self.loopback_ok,
                NatStatus::Public => false,
            }
    }

    /// Listen through known relays (a reservation each, at most two) so peers can reach us at
    /// `/p2p/<relay>/p2p-circuit`; DCUtR then tries to upgrade to direct.
    fn reserve_relay_slots(&mut self) {
        if !self.wants_relay_reservation() || self.reservations.len() >= MAX_RELAYS {
            return;
        }
        let candidates: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(p, _)| !self.reservations.contains_key(p) && self.swarm.is_connected(p))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (relay, addr) in candidates.into_iter().take(MAX_RELAYS - self.reservations.len()) {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, %circuit, "requesting a relay reservation");
                    self.reservations.insert(relay, id);
                }
                Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through relay"),
            }
        }
    }

    /// Whether `addr` is worth telling others or dialing.
    fn routable(&self, addr: &Multiaddr) -> bool {
        !is_unroutable(addr) && (self.loopback_ok || !is_loopback(addr))
    }

    /// Whether `addr` belongs in Kademlia and discovery dials: routable and not a relay
    /// circuit. A peer reachable only through a relay serves no DHT queries (it is a
    /// Kademlia client behind NAT), and dialing it for discovery or a query would spend one
    /// of the relay's circuits on every pair of such peers, renewed each time the relay's
    /// circuit limit cuts it. Tasks and probes dial it through the relay when needed.
    fn direct_routable(&self, addr: &Multiaddr) -> bool {
        self.routable(addr) && !is_relayed(addr)
    }

    /// How to dial `peer`: at the addresses it advertised, and only those, when it did.
    ///
    /// The swarm dials all of a peer's addresses at once and the first handshake decides:
    /// if someone else answers first (ourselves on a loopback or LAN address a behaviour
    /// cached from the peer's Identify, a host on a LAN numbered like the peer's), the whole
    /// dial fails with `WrongPeerId`, even when the relay circuit would have connected.
    /// Behind NAT a peer advertises exactly its circuits, so they are what gets dialed.
    fn dial_opts(&self, peer: PeerId, addresses: Vec<Multiaddr>) -> DialOpts {
        let usable: Vec<Multiaddr> = addresses.into_iter().filter(|a| self.routable(a)).collect();
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::Disconnected);
        if usable.is_empty() {
            // Nothing advertised (yet): whatever the behaviours know.
            opts.build()
        } else {
            opts.addresses(usable).build()
        }
    }

    /// Sends a task on the lane to `peer` (opened on first use), or by request-response to a
    /// peer that speaks no lanes; `peer` must be connected, so no dial of theirs.
    fn send_task_request(&mut self, peer: PeerId, request: TaskRequest) {
        if self.legacy_task_peers.contains(&peer) {
            return self.send_task_by_request_response(peer, request);
        }
        let request = match self.lanes.get(&peer) {
            None => request,
            Some(lane) => match lane.send(request) {
                Ok(()) => return,
                Err(NotQueued::Full(request)) => {
                    let err = DispatchError::Unreachable(format!(
                        "{} tasks already queued for this worker",
                        lanes::MAX_IN_FLIGHT
                    ));
                    return self.task_failed(peer, request, err);
                }
                // The lane ended (its connection closed, say): the task goes on a new one.
                Err(NotQueued::Ended(request)) => request,
            },
        };
        let lane = OutboundLane::open(
            peer,
            self.streams.clone(),
            self.names.task_lane.clone(),
            self.events.clone(),
            self.lane_events_tx.clone(),
            self.metrics.clone(),
        );
        if let Err(NotQueued::Ended(request) | NotQueued::Full(request)) = lane.send(request) {
            self.task_failed(peer, request, DispatchError::ConnectionLost("task lane ended at once".into()));
        }
        self.lanes.insert(peer, lane);
    }

    fn send_task_by_request_response(&mut self, peer: PeerId, request: TaskRequest) {
        let (task_id, attempt) = (request.task_id.clone(), request.attempt);
        let id = self.swarm.behaviour_mut().tasks.send_request(&peer, request);
        self.outbound_tasks.insert(id, (peer, task_id, attempt));
    }

    fn on_lane_event(&mut self, event: LaneEvent) {
        match event {
            LaneEvent::Unsupported { peer, requests } => {
                self.lanes.remove(&peer);
                if self.swarm.is_connected(&peer) {
                    self.legacy_task_peers.insert(peer);
                }
                for request in requests {
                    self.send_task_by_request_response(peer, request);
                }
            }
            LaneEvent::Request { peer, request, reply } => self.on_task_request(peer, request, Replier::Lane(reply)),
        }
    }

    fn task_failed(&mut self, peer: PeerId, request: TaskRequest, err: DispatchError) {
        let TaskRequest { task_id, attempt, .. } = request;
        self.emit(NetworkEvent::TaskAnswered { peer, task_id, attempt, result: Err(err) });
    }

    /// The dial for `peer`'s waiting tasks ended: send them, or fail them with `why`.
    fn task_dial_ended(&mut self, peer: PeerId, why: Option<String>) {
        let Some(dial) = self.task_dials.remove(&peer) else { return };
        for request in dial.tasks {
            match (&why, self.swarm.is_connected(&peer)) {
                (_, true) => self.send_task_request(peer, request),
                (Some(why), false) => self.task_failed(peer, request, DispatchError::Unreachable(why.clone())),
                (None, false) => {
                    let err = DispatchError::Unreachable("dial failed".into());
                    self.task_failed(peer, request, err)
                }
            }
        }
    }

    /// Whether anything of ours is in flight with `peer`: tasks or probes, either way.
    fn busy_with(&self, peer: &PeerId) -> bool {
        self.outbound_tasks.values().any(|(p, ..)| p == peer)
            || self.lanes.get(peer).is_some_and(OutboundLane::busy)
            || self.pending_task_replies.values().any(|(p, _)| p == peer)
            || self.outbound_probes.values().any(|(via, ..)| via == peer)
            || self.pending_probe_replies.values().any(|(p, _)| p == peer)
    }

    /// Whether the connection to `peer` belongs to the active view (see `view`), `margin`
    /// as there. Bootstrap and relay nodes keep all their connections and are kept by all;
    /// so is anyone not (yet) a member, which is not ours to judge.
    fn in_view(&self, peer: &PeerId, margin: f64) -> bool {
        matches!(self.role, Role::Bootstrap | Role::Relay)
            || !self.members.contains(peer)
            || self.hubs.contains(peer)
            || self.bootstrap.is_bootstrap(peer)
            || view::keeps(self.swarm.local_peer_id(), peer, self.cluster_size, self.active_peers, margin)
    }

    /// Adds an address of `peer` to the routing table (the only way in: Kademlia's own
    /// inserts are off, see `network/swarm.rs`), unless `peer` is new to a full bucket.
    /// There Kademlia would dial the bucket's least recently seen disconnected entry
    /// to see whether it still lives. In a partial view most entries are disconnected on
    /// purpose (alive, outside the view): each check is a connection `trim_view` closes 10 s
    /// later, and the checked peer learns of us in turn and checks one of its own, a chain
    /// of dials that never ends. Entries leave the table when the core finds them dead or
    /// gone (`Command::Forget`) instead.
    fn learn_address(&mut self, peer: &PeerId, address: Multiaddr) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let full = kad.kbucket(*peer).is_some_and(|bucket| {
            bucket.num_entries() >= KAD_K && !bucket.iter().any(|e| e.node.key.preimage() == peer)
        });
        if !full {
            kad.add_address(peer, address);
        }
    }

    /// Closes connections outside the active view that nothing uses: no task, lane or probe
    /// either way, no dial waiting, and older than `TRANSIENT_GRACE`.
    fn trim_view(&mut self, now: Instant) {
        let inbound_lanes = self.inbound_lanes.lock().expect("lanes lock").clone();
        let idle: Vec<PeerId> = self
            .connections
            .iter()
            .filter(|(peer, conns)| {
                conns.iter().all(|c| now.duration_since(c.since) >= TRANSIENT_GRACE && !c.closing)
                    && !self.in_view(peer, view::TRIM_MARGIN)
                    && !self.lanes.contains_key(*peer)
                    && !inbound_lanes.contains_key(*peer)
                    && !self.task_dials.contains_key(*peer)
                    && !self.busy_with(peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in idle {
            tracing::debug!(%peer, "closing a connection outside the active view");
            self.metrics.connections_trimmed.inc();
            for c in self.connections.get_mut(&peer).into_iter().flatten() {
                c.closing = true;
            }
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Dials members of the active view found in the routing table that we are not connected
    /// to (a pair is kept by both ends, but either may have learned of the other only after
    /// its discovery dial, or lost the connection): a few per second, each at most every
    /// `VIEW_REDIAL`. Until the cluster is larger than the view, discovery's dials suffice.
    fn fill_view(&mut self, now: Instant) {
        if !view::partial(self.cluster_size, self.active_peers) {
            return;
        }
        self.view_dials.retain(|_, at| now.duration_since(*at) < VIEW_REDIAL);
        let local = *self.swarm.local_peer_id();
        let mut due: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                if view::keeps(&local, &peer, self.cluster_size, self.active_peers, 1.0) {
                    due.push((peer, entry.node.value.iter().cloned().collect()));
                }
            }
        }
        let mut started = 0;
        for (peer, addresses) in due {
            if self.swarm.is_connected(&peer)
                || self.view_dials.contains_key(&peer)
                || self.task_dials.contains_key(&peer)
            {
                continue;
            }
            let direct: Vec<Multiaddr> = addresses.into_iter().filter(|a| self.direct_routable(a)).collect();
            if direct.is_empty() {
                continue;
            }
            self.view_dials.insert(peer, now);
            tracing::debug!(%peer, "dialing a member of the active view");
            let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(direct).build());
            started += 1;
            if started == VIEW_DIALS_PER_SEC {
                break;
            }
        }
    }

    /// Closes relayed connections to peers we also reach directly (after a hole punch), once
    /// nothing is in flight with the peer. A task lane opens on one of a peer's connections
    /// picked at random (request-response spreads requests over all of them), so an open
    /// circuit would keep carrying tasks, slower and under the relay's time and byte limits.
    /// Closing it ends a lane on it, and the next task opens one on the direct connection.
    fn close_superseded_circuits(&mut self) {
        let superseded: Vec<(PeerId, ConnectionId)> = self
            .connections
            .iter()
            .filter(|(_, conns)| conns.iter().any(|c| !c.relayed))
            .flat_map(|(peer, conns)| conns.iter().filter(|c| c.relayed && !c.closing).map(|c| (*peer, c.id)))
            .collect();
        for (peer, id) in superseded {
            if self.busy_with(&peer) || !self.swarm.close_connection(id) {
                continue;
            }
            tracing::info!(%peer, "closing the relayed connection: a direct one exists");
            if let Some(c) = self.connections.get_mut(&peer).and_then(|cs| cs.iter_mut().find(|c| c.id == id)) {
                c.closing = true;
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::SendTask { peer, addresses, request } => {
                self.metrics.message("out", "task", request.payload.len());
                if self.swarm.is_connected(&peer) {
                    self.send_task_request(peer, request);
                } else if let Some(dial) = self.task_dials.get_mut(&peer) {
                    if dial.tasks.len() < MAX_TASKS_AWAITING_DIAL {
                        dial.tasks.push(request);
                    } else {
                        let err = DispatchError::Unreachable("too many tasks waiting for a connection".into());
                        self.task_failed(peer, request, err);
                    }
                } else {
                    let opts = self.dial_opts(peer, addresses);
                    let connection = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            self.task_dials.insert(peer, TaskDial { connection, tasks: vec![request] });
                        }
                        Err(e) => {
                            let err = DispatchError::Unreachable(dial_failure(&e));
                            self.task_failed(peer, request, err);
                        }
                    }
                }
            }
            Command::RespondTask { id, response } => {
                if let Some((_, replier)) = self.pending_task_replies.remove(&id) {
                    self.metrics.message("out", "task_response", response.result_len());
                    self.reply_task(replier, response);
                }
            }
            Command::SendProbe { via, target } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .probe
                    .send_request(&via, ProbeRequest { v: WIRE_VERSION, target: target.to_string() });
                self.outbound_probes.insert(id, (via, target, Instant::now()));
            }
            Command::RespondProbe { id, target, reachable } => {
                if let Some((_, channel)) = self.pending_probe_replies.remove(&id) {
                    let _ = self.swarm.behaviour_mut().probe.send_response(
                        channel,
                        ProbeResponse { v: WIRE_VERSION, target: target.to_string(), reachable },
                    );
                }
            }
            Command::Publish { message } => {
                let topic = self.topic_of(&message).clone();
                let data = match message.seal(&self.signing_key) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!(error = %e, "gossip not sealed: signing failed");
                        return;
                    }
                };
                let len = data.len();
                if let Some(gs) = self.swarm.behaviour_mut().gossipsub.as_mut() {
                    match gs.publish(topic, data) {
                        Ok(_) => self.metrics.message("out", "gossip", len),
                        // No subscribed peers yet: the next heartbeat will try again.
                        Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                        Err(e) => tracing::debug!(error = %e, "gossip publish failed"),
                    }
                }
            }
            Command::Dial { peer, addresses } => {
                if !self.swarm.is_connected(&peer) {
                    let opts = self.dial_opts(peer, addresses);
                    let connection = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            self.probe_dials.insert(connection, peer);
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "dial not started");
                            self.emit(NetworkEvent::DialFailed { peer });
                        }
                    }
                }
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::ClusterSize { members } => self.cluster_size = members,
            Command::Forget { peer } => {
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
            }
            Command::PutRecord { key, value, replication, reply } => {
                let record = kad::Record::new(key, value);
                let quorum = std::num::NonZeroUsize::new(replication.min(self.routing_table_size()).max(1))
                    .map_or(kad::Quorum::One, kad::Quorum::N);
                match self.swarm.behaviour_mut().kad.put_record(record, quorum) {
                    Ok(qid) => {
                        self.pending_puts.insert(qid, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("local store refused the record: {e:?}")));
                    }
                }
            }
            Command::GetRecord { key, reply } => {
                let qid = self.swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
                self.pending_gets.insert(qid, reply);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::GossipScores { reply } => {
                let _ = reply.send(self.gossip_scores());
            }
        }
    }

    /// GossipSub scores of connected cluster members; refreshes the graylisted gauge.
    fn gossip_scores(&mut self) -> HashMap<PeerId, f64> {
        let Some(gs) = self.swarm.behaviour().gossipsub.as_ref() else { return HashMap::new() };
        let scores: HashMap<PeerId, f64> =
            self.swarm.connected_peers().filter_map(|p| gs.peer_score(p).map(|s| (*p, s))).collect();
        let graylist = super::swarm::gossip_thresholds().graylist_threshold;
        self.metrics.gossip_graylisted.set(scores.values().filter(|s| **s < graylist).count() as i64);
        scores
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    fn status(&mut self) -> NetworkStatus {
        NetworkStatus {
            listen_addresses: self.swarm.listeners().cloned().collect(),
            external_addresses: self.swarm.external_addresses().cloned().collect(),
            nat: self.nat,
            connected_peers: self.members.iter().filter(|p| self.swarm.is_connected(p)).count(),
            routing_table_size: self.routing_table_size(),
            relay_reservations: self.metrics.relay_reservations.get().max(0) as usize,
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let address = endpoint.get_remote_address().clone();
                // The accepting side of a circuit sees only `/p2p/<id>` as the remote address;
                // the endpoint knows either way.
                let relayed = endpoint.is_relayed();
                if self.bootstrap.connected(peer_id, connection_id) && !self.joined_once {
                    self.joined_once = true;
                    tracing::info!(peer = %peer_id, "connected to bootstrap peer");
                    if endpoint.is_dialer() {
                        self.learn_address(&peer_id, address.clone());
                    }
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    self.last_refresh = Instant::now();
                }
                let probe = self.probe_dials.remove(&connection_id).is_some();
                let before = self.relayed_only(&peer_id);
                self.connections.entry(peer_id).or_default().push(Connection {
                    id: connection_id,
                    relayed,
                    closing: false,
                    since: Instant::now(),
                });
                self.report_kind_change(peer_id, before);
                // Connected, whichever dial (or the peer) made it: waiting tasks go now.
                self.task_dial_ended(peer_id, None);
                let dialer = endpoint.is_dialer();
                tracing::debug!(peer = %peer_id, %address, relayed, dialer, probe, "connection established");
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, num_established, .. } => {
                let before = self.relayed_only(&peer_id);
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|c| c.id != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if num_established > 0 {
                    self.report_kind_change(peer_id, before);
                }
                if num_established == 0 {
                    // A close both ends expect (outside the active view) is no sign of failure.
                    let expected = !self.in_view(&peer_id, 1.0);
                    self.hubs.remove(&peer_id);
                    self.bootstrap.disconnected(peer_id, Instant::now());
                    // Its lane ends with the connection; a newer version may answer next time.
                    self.lanes.remove(&peer_id);
                    self.legacy_task_peers.remove(&peer_id);
                    if self.members.remove(&peer_id) {
                        let failure = !expected
                            && !matches!(cause, None | Some(libp2p::swarm::ConnectionError::KeepAliveTimeout));
                        tracing::debug!(peer = %peer_id, ?cause, "peer disconnected");
                        self.emit(NetworkEvent::PeerDisconnected { peer: peer_id, failure });
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error: libp2p::swarm::ListenError::Denied { cause }, .. } => {
                self.count_denied(&cause);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let DialError::Denied { cause } = &error {
                    self.count_denied(cause);
                }
                self.bootstrap.dial_failed(connection_id, Instant::now(), rand::random());
                let Some(peer) = peer_id else { return };
                if let DialError::WrongPeerId { obtained, address } = &error {
                    // Someone else answers there (often ourselves, on a shared private address).
                    tracing::debug!(%peer, %obtained, %address, "address belongs to another peer; forgetting it");
                    self.swarm.behaviour_mut().kad.remove_address(&peer, address);
                } else {
                    tracing::debug!(%peer, %error, "dial failed");
                }
                if self.task_dials.get(&peer).is_some_and(|d| d.connection == connection_id) {
                    self.task_dial_ended(peer, Some(dial_failure(&error)));
                }
                if self.probe_dials.remove(&connection_id).is_some() && !self.swarm.is_connected(&peer) {
                    self.emit(NetworkEvent::DialFailed { peer });
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some(relay) = self.reservations.iter().find(|(_, id)| **id == listener_id).map(|(p, _)| *p) {
                    tracing::info!(%relay, ?reason, "relay reservation ended");
                    self.reservations.remove(&relay);
                    self.metrics.relay_reservations.set(self.reservations.len() as i64);
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
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
                if !self.members.contains(&e.peer) {
                    return;
                }
                match e.result {
                    Ok(rtt) => {
                        self.metrics.ping_rtt.observe(rtt.as_secs_f64());
                        self.emit(NetworkEvent::PingOk { peer: e.peer, rtt });
                    }
                    Err(err) => {
                        tracing::debug!(peer = %e.peer, error = %err, "ping failed");
                        self.emit(NetworkEvent::PingFailed { peer: e.peer });
                    }
                }
            }
            BehaviourEvent::Kad(e) => {
                self.libp2p_metrics.record(&e);
                self.on_kad(e);
            }
            BehaviourEvent::Gossipsub(e) => {
                self.libp2p_metrics.record(&e);
                self.on_gossip(e);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "mDNS discovered");
                    self.learn_address(&peer, addr.clone());
                    self.maybe_dial(peer, vec![addr]);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let status = match new {
                    autonat::NatStatus::Public(_) => NatStatus::Public,
                    autonat::NatStatus::Private => NatStatus::Private,
                    autonat::NatStatus::Unknown => NatStatus::Unknown,
                };
                tracing::info!(status = status.as_str(), "NAT status changed");
                self.nat = status;
                self.metrics.set_nat(status.as_str());
                if !self.wants_relay_reservation() {
                    for (relay, listener) in std::mem::take(&mut self.reservations) {
                        tracing::info!(%relay, "giving back the relay reservation: reachable directly");
                        self.swarm.remove_listener(listener);
                    }
                    self.metrics.relay_reservations.set(0);
                }
                if self.role == Role::Worker {
                    // A worker behind NAT cannot answer DHT queries from outside; be a client.
                    let mode = if status == NatStatus::Private { kad::Mode::Client } else { kad::Mode::Server };
                    self.swarm.behaviour_mut().kad.set_mode(Some(mode));
                }
                self.emit(NetworkEvent::Nat(status));
            }
            BehaviourEvent::Autonat(_) => {}
            BehaviourEvent::RelayServer(e) => {
                self.libp2p_metrics.record(&e);
            }
            BehaviourEvent::RelayClient(e) => match e {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                    tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                    self.metrics.relay_reservations.set(self.reservations.len() as i64);
                }
                other => tracing::debug!(event = ?other, "relay client event"),
            },
            BehaviourEvent::Dcutr(e) => {
                self.libp2p_metrics.record(&e);
                let outcome = if e.result.is_ok() { "success" } else { "failure" };
                tracing::info!(peer = %e.remote_peer_id, outcome, "hole punch finished");
                self.metrics.holepunch.get_or_create(&crate::metrics::OutcomeLabels { outcome }).inc();
            }
            BehaviourEvent::Tasks(e) => self.on_task_event(e),
            // libp2p-stream reports nothing: lanes hear from their streams.
            BehaviourEvent::Streams(()) => {}
            BehaviourEvent::Probe(e) => self.on_probe_event(e),
            BehaviourEvent::Limits(never) | BehaviourEvent::Memory(never) => match never {},
        }
    }

    /// True when every open connection to `peer` goes through a relay.
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.connections.get(peer).is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relayed))
    }

    /// Tells the application when a member's connection turned direct (hole punch) or back.
    fn report_kind_change(&mut self, peer: PeerId, before: bool) {
        let now = self.relayed_only(&peer);
        if now != before && self.members.contains(&peer) && self.connections.contains_key(&peer) {
            self.emit(NetworkEvent::ConnectionKind { peer, relayed: now });
        }
    }

    /// Discovery: dial a peer we just learned of at its direct addresses (never through a
    /// relay, see `direct_routable`).
    fn maybe_dial(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        let connected = self.swarm.connected_peers().count();
        if !addresses.is_empty()
            && peer != *self.swarm.local_peer_id()
            && !self.swarm.is_connected(&peer)
            && (connected as f64) < f64::from(self.max_connections) * DIAL_SHARE
            && view::keeps(self.swarm.local_peer_id(), &peer, self.cluster_size, self.active_peers, 1.0)
        {
            let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(addresses).build());
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if info.protocol_version != self.protocol_version {
            tracing::info!(peer = %peer_id, theirs = %info.protocol_version, ours = %self.protocol_version,
                "peer belongs to another cluster; disconnecting");
            self.metrics
                .peers_rejected
                .get_or_create(&crate::metrics::ReasonLabels { reason: "protocol_version".into() })
                .inc();
            self.swarm.behaviour_mut().kad.remove_peer(&peer_id);
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            // Reach the relay at an address it listens on, a non-loopback one if it has any
            // (a loopback address only works for a relay on this same host).
            let usable = |a: &&Multiaddr| {
                self.routable(a) && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit | Protocol::P2p(_)))
            };
            let loopback = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback()));
            let addr = info
                .listen_addrs
                .iter()
                .filter(usable)
                .find(|a| !loopback(a))
                .or_else(|| info.listen_addrs.iter().find(usable))
                .cloned();
            if let Some(addr) = addr {
                self.relays.insert(peer_id, addr);
            }
        }
        if info.protocols.contains(&self.names.kad) {
            for addr in &info.listen_addrs {
                if self.direct_routable(addr) {
                    self.learn_address(&peer_id, addr.clone());
                }
            }
        }
        if self.members.insert(peer_id) {
            let (address, relayed) = (info.observed_addr.clone(), self.relayed_only(&peer_id));
            let address = info.listen_addrs.iter().find(|a| self.routable(a)).cloned().unwrap_or(address);
            let role = info.agent_version.split_whitespace().find_map(|w| w.strip_prefix("role=")).map(str::to_string);
            if matches!(role.as_deref(), Some("bootstrap" | "relay")) {
                self.hubs.insert(peer_id);
            }
            self.emit(NetworkEvent::PeerConnected { peer: peer_id, address, relayed, role });
            // Its GossipSub subscription may have arrived before Identify made it a member, when
            // `Subscribed` was not passed on: pass it on now, so it is sent our advertisement.
            let topic = self.capabilities_topic.hash();
            let subscribed = self
                .swarm
                .behaviour()
                .gossipsub
                .as_ref()
                .is_some_and(|gs| gs.all_peers().any(|(p, topics)| *p == peer_id && topics.contains(&&topic)));
            if subscribed {
                self.emit(NetworkEvent::Subscribed { peer: peer_id });
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, addresses, .. } => {
                let direct = addresses.iter().filter(|a| self.direct_routable(a)).cloned().collect();
                self.maybe_dial(peer, direct);
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::PutRecord(r) => {
                    if let Some(reply) = self.pending_puts.remove(&id) {
                        let _ = reply.send(match r {
                            Ok(_) => Ok(1),
                            Err(kad::PutRecordError::QuorumFailed { success, .. })
                            | Err(kad::PutRecordError::Timeout { success, .. })
                                if !success.is_empty() =>
                            {
                                Ok(success.len())
                            }
                            Err(e) => Err(format!("DHT put failed: {e}")),
                        });
                    }
                }
                kad::QueryResult::GetRecord(r) => {
                    let done = step.last;
                    match r {
                        Ok(kad::GetRecordOk::FoundRecord(rec)) => {
                            if let Some(reply) = self.pending_gets.remove(&id) {
                                let _ = reply.send(Ok(Some(rec.record.value)));
                                // One answer is enough; stop asking the rest of the DHT.
                                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                            }
                        }
                        Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. })
                        | Err(kad::GetRecordError::NotFound { .. }) => {
                            if let Some(reply) = self.pending_gets.remove(&id) {
                                let _ = reply.send(Ok(None));
                            }
                        }
                        Err(e) => {
                            if let Some(reply) = self.pending_gets.remove(&id) {
                                let _ = reply.send(Err(format!("DHT get failed: {e}")));
                            }
                        }
                    }
                    if done {
                        self.pending_gets.remove(&id);
                    }
                }
                kad::QueryResult::Bootstrap(Ok(_)) | kad::QueryResult::GetClosestPeers(Ok(_)) => {}
                other => tracing::debug!(result = ?other, "kad query finished"),
            },
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                self.metrics.message("in", "gossip", message.data.len());
                let verdict = self.validate_gossip(&message);
                let acceptance = match &verdict {
                    Ok(_) => gossipsub::MessageAcceptance::Accept,
                    Err((_, gossipsub::MessageAcceptance::Ignore)) => gossipsub::MessageAcceptance::Ignore,
                    Err(_) => gossipsub::MessageAcceptance::Reject,
                };
                self.metrics
                    .gossip_validation
                    .get_or_create(&crate::metrics::OutcomeLabels {
                        outcome: match acceptance {
                            gossipsub::MessageAcceptance::Accept => "accept",
                            gossipsub::MessageAcceptance::Ignore => "ignore",
                            gossipsub::MessageAcceptance::Reject => "reject",
                        },
                    })
                    .inc();
                if let Some(gs) = self.swarm.behaviour_mut().gossipsub.as_mut() {
                    // Reject counts against the peer that forwarded it (score P4); only
                    // accepted messages are forwarded further.
                    gs.report_message_validation_result(&message_id, &propagation_source, acceptance);
                }
                match verdict {
                    Err((reason, _)) => {
                        tracing::debug!(peer = %propagation_source, reason, "gossip message rejected");
                        self.metrics.dropped(reason);
                    }
                    Ok((source, GossipMessage::HeartBeat(hb))) => {
                        self.emit(NetworkEvent::HeartBeat { from: source, message: hb })
                    }
                    Ok((source, GossipMessage::CapabilityAdvertisement(ad))) => {
                        for a in &ad.addresses {
                            if let Ok(addr) = a.parse::<Multiaddr>()
                                && self.direct_routable(&addr)
                            {
                                self.learn_address(&source, addr);
                            }
                        }
                        self.emit(NetworkEvent::Advertisement { from: source, message: ad })
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, .. } if self.members.contains(&peer_id) => {
                self.emit(NetworkEvent::Subscribed { peer: peer_id });
            }
            _ => {}
        }
    }

    /// The topic a gossip message of this type travels on.
    fn topic_of(&self, message: &GossipMessage) -> &gossipsub::IdentTopic {
        match message {
            GossipMessage::HeartBeat(_) => &self.heartbeat_topic,
            GossipMessage::CapabilityAdvertisement(_) => &self.capabilities_topic,
        }
    }

    /// Application validation of a gossip message, which GossipSub hands over once however
    /// many copies arrive: sealed by its author with a valid signature, well-formed and within
    /// bounds, on the topic its type belongs to, and about the node that signed it. A newer
    /// wire version is ignored rather than punished, so a rolling upgrade does not graylist the
    /// upgraded nodes.
    fn validate_gossip(
        &self,
        message: &gossipsub::Message,
    ) -> Result<(PeerId, GossipMessage), (&'static str, gossipsub::MessageAcceptance)> {
        use crate::protocol::{DecodeError, OpenError};
        use gossipsub::MessageAcceptance::{Ignore, Reject};
        let (source, msg) = GossipMessage::open(&message.data).map_err(|e| match e {
            OpenError::NotSealed(_) => ("gossip_unsigned", Reject),
            OpenError::BadSignature | OpenError::PayloadType => ("gossip_bad_signature", Reject),
            OpenError::TooLarge(_) | OpenError::Payload(DecodeError::TooLarge(_)) => ("gossip_oversized", Reject),
            OpenError::Payload(DecodeError::Version(_)) => ("gossip_version", Ignore),
            OpenError::Payload(_) => ("gossip_malformed", Reject),
        })?;
        if message.topic != self.topic_of(&msg).hash() {
            return Err(("gossip_wrong_topic", Reject));
        }
        if msg.claimed_node() != source.to_string() {
            return Err(("gossip_sender_mismatch", Reject));
        }
        Ok((source, msg))
    }

    fn on_task_event(&mut self, event: request_response::Event<TaskRequest, TaskResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message, .. } => match message {
                Message::Request { request, channel, .. } => {
                    self.on_task_request(peer, request, Replier::Stream(channel))
                }
                Message::Response { request_id, response } => {
                    if let Some((peer, task_id, attempt)) = self.outbound_tasks.remove(&request_id) {
                        self.metrics.message("in", "task_response", response.result_len());
                        self.emit(NetworkEvent::TaskAnswered { peer, task_id, attempt, result: Ok(response) });
                    }
                }
            },
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some((peer, task_id, attempt)) = self.outbound_tasks.remove(&request_id) {
                    let err = match error {
                        request_response::OutboundFailure::DialFailure => {
                            DispatchError::Unreachable("dial failed".into())
                        }
                        request_response::OutboundFailure::Timeout => DispatchError::Timeout,
                        request_response::OutboundFailure::ConnectionClosed => {
                            DispatchError::ConnectionLost("connection closed".into())
                        }
                        request_response::OutboundFailure::UnsupportedProtocols => {
                            DispatchError::Unreachable("peer does not speak the task protocol".into())
                        }
                        request_response::OutboundFailure::Io(e) => {
                            self.metrics.dropped("task_response_malformed");
                            DispatchError::BadResponse(e.to_string())
                        }
                    };
                    self.emit(NetworkEvent::TaskAnswered { peer, task_id, attempt, result: Err(err) });
                }
            }
            // Undecodable requests are counted by the codec (libp2p does not report them).
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound task request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_probe_event(&mut self, event: request_response::Event<ProbeRequest, ProbeResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message, .. } => match message {
                Message::Request { request, channel, .. } => {
                    // A direct ping (a probe about ourselves) is answered before Identify has
                    // run: it tells nothing but that we are up, and the prober may have just
                    // dialed us for it.
                    let about_us = request.target == self.swarm.local_peer_id().to_string();
                    if !(self.members.contains(&peer) || about_us) || request.v != WIRE_VERSION {
                        self.metrics.dropped("probe_unexpected");
                        return;
                    }
                    let id = self.next_id();
                    self.pending_probe_replies.insert(id, (peer, channel));
                    self.emit(NetworkEvent::ProbeRequested { id, peer, request });
                }
                Message::Response { request_id, response } => {
                    if let Some((via, target, sent)) = self.outbound_probes.remove(&request_id) {
                        let reachable = response.reachable && response.target == target.to_string();
                        let rtt = sent.elapsed();
                        self.emit(NetworkEvent::ProbeAnswered { via, target, reachable, rtt });
                    }
                }
            },
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some((via, target, sent)) = self.outbound_probes.remove(&request_id) {
                    // A member that does not speak the probe protocol (another implementation,
                    // an older version) still showed it is up by negotiating: for a direct
                    // ping, that is the answer. A helper that cannot be asked is no answer.
                    let up = via == target && matches!(error, request_response::OutboundFailure::UnsupportedProtocols);
                    let rtt = sent.elapsed();
                    self.emit(NetworkEvent::ProbeAnswered { via, target, reachable: up, rtt });
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    /// A task request, from a lane or a request-response stream: checked, then handed to the
    /// application or refused.
    fn on_task_request(&mut self, peer: PeerId, request: TaskRequest, replier: Replier) {
        self.metrics.message("in", "task", request.payload.len());
        if !self.members.contains(&peer) {
            // Identify has not confirmed this peer is of our cluster yet (a task can arrive on
            // a new connection before Identify's answer): busy, so the sender retries soon.
            self.metrics.dropped("task_from_unidentified_peer");
            return self.refuse_task(replier, request, TaskError::Busy);
        }
        if request.v != WIRE_VERSION {
            self.metrics.dropped("task_version");
            let v = request.v;
            return self.refuse_task(replier, request, TaskError::Version(v));
        }
        if self.allowed_submitters.as_ref().is_some_and(|a| !a.contains(&peer)) {
            tracing::debug!(%peer, "task from a peer not in security.allowed_submitters refused");
            self.metrics.dropped("task_submitter_not_allowed");
            return self.refuse_task(replier, request, TaskError::NotAllowed);
        }
        if self.task_rate.as_ref().is_some_and(|r| r.check_key(&peer).is_err()) {
            // Busy costs the sender's task no attempt; it backs off and retries.
            self.metrics.limit_hit("task_requests_per_peer");
            return self.refuse_task(replier, request, TaskError::Busy);
        }
        let id = self.next_id();
        self.pending_task_replies.insert(id, (peer, replier));
        self.emit(NetworkEvent::TaskRequested { id, peer, request });
    }

    /// Answers an inbound task request with an error without involving the worker.
    fn refuse_task(&mut self, replier: Replier, request: TaskRequest, error: TaskError) {
        let response = TaskResponse {
            v: WIRE_VERSION,
            task_id: request.task_id,
            attempt: request.attempt,
            worker: self.swarm.local_peer_id().to_string(),
            outcome: crate::protocol::TaskOutcome::Err(error),
        };
        self.reply_task(replier, response);
    }

    fn reply_task(&mut self, replier: Replier, response: TaskResponse) {
        let sent = match replier {
            Replier::Stream(channel) => self.swarm.behaviour_mut().tasks.send_response(channel, response).is_ok(),
            Replier::Lane(reply) => reply.send(response),
        };
        if !sent {
            tracing::debug!("task response not sent: the requester's stream is gone");
        }
    }

    /// Counts a connection that a limit refused, by the limit that bit.
    fn count_denied(&self, cause: &libp2p::swarm::ConnectionDenied) {
        let limit = if let Some(e) = cause.downcast_ref::<libp2p::connection_limits::Exceeded>() {
            // The kind is only public through the message ("at most N pending incoming ...").
            let text = e.to_string();
            if text.contains("pending incoming") {
                "pending_incoming"
            } else if text.contains("pending outgoing") {
                "pending_outgoing"
            } else if text.contains("per peer") {
                "connections_per_peer"
            } else {
                "connections"
            }
        } else if cause.downcast_ref::<libp2p::memory_connection_limits::MemoryUsageLimitExceeded>().is_some() {
            "memory"
        } else {
            return;
        };
        tracing::debug!(limit, %cause, "connection refused by a limit");
        self.metrics.limit_hit(limit);
    }

    fn next_id(&mut self) -> InboundId {
        self.next_inbound += 1;
        InboundId(self.next_inbound)
    }
}

/// Why a dial failed, in a line a task's error can carry.
fn dial_failure(error: &DialError) -> String {
    match error {
        DialError::WrongPeerId { obtained, address } => format!("dial failed: {address} answered as {obtained}"),
        DialError::Transport(errors) => format!("dial failed: none of {} address(es) answered", errors.len()),
        DialError::NoAddresses => "dial failed: no known address".into(),
        other => format!("dial failed: {other}"),
    }
}

/// Addresses that are useless to anyone else: unspecified binds.
pub fn is_unroutable(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// Addresses through a relay (`.../p2p-circuit/...`).
fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Loopback addresses: reachable only from this host.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_failures_read_as_one_line_that_starts_with_dial_failed() {
        let peer = PeerId::random();
        let address: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("a valid multiaddr");
        let wrong = DialError::WrongPeerId { obtained: peer, address: address.clone() };
        assert_eq!(dial_failure(&wrong), format!("dial failed: {address} answered as {peer}"));
        assert_eq!(dial_failure(&DialError::NoAddresses), "dial failed: no known address");
        assert_eq!(dial_failure(&DialError::Transport(Vec::new())), "dial failed: none of 0 address(es) answered");
    }
}
