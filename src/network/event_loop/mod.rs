//! The one task that owns the `Swarm`. It holds a sub-state per concern (peers, the active
//! view, relay/NAT, the DHT, tasks, probes, gossip) and only routes: commands and swarm
//! events to the sub-state that owns them (see `route`), and their `NetworkEvent`s out.
//!
//! It never blocks on the application: events wait in a bounded outbox, and while the
//! outbox is full the swarm and the lanes are not polled (backpressure on the network), but
//! commands are still drained, so the application can never deadlock against it.

mod route;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::metrics::Recorder;
use libp2p::{PeerId, Swarm};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::active_view::ActiveView;
use super::addresses::AddressPolicy;
use super::behaviour::Behaviour;
use super::catch_up::{CatchUp, Pulled};
use super::client::{COMMAND_CHANNEL, Command};
use super::dht::Dht;
use super::discovery::Bootstrapper;
use super::event::NetworkEvent;
use super::gossip::Gossip;
use super::lanes::LaneEvent;
use super::names::ProtocolNames;
use super::peers::Peers;
use super::probes::Probes;
use super::records::Records;
use super::relay::Relay;
use super::tasks::TaskRouter;
use crate::config::Config;
use crate::metrics::Metrics;

/// Events waiting for the application; the swarm is not polled while this many wait.
const OUTBOX_LIMIT: usize = 1024;
/// Interval of the housekeeping tick (relay slots, walks, the DHT's bookkeeping) once
/// settled. A bootstrap redial wakes the loop when it falls due, whatever the interval.
const TICK: Duration = Duration::from_secs(1);
/// The interval while Kademlia's bootstraps are being cut short (`Dht::wants_fast_ticks`).
/// At 100 ms for every node, ticks were a fifth of an idle 100-node cluster's wake-ups.
const FAST_TICK: Duration = Duration::from_millis(100);
/// How often the slower housekeeping runs (scores, rate-limit pruning, the active view).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The graylisted-peers gauge is refreshed every this many housekeepings: GossipSub computes
/// each peer's score afresh when asked (it showed in an idle 100-node profile at once a second).
const SCORES_EVERY: u64 = 10;
/// How long a stopping node keeps its swarm running to flush its last messages.
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_millis(200);
/// How long the close frames get before the runtime drops the sockets.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    outbox: VecDeque<NetworkEvent>,
    /// Lanes' requests, answers and verdicts.
    lane_events: mpsc::Receiver<LaneEvent>,
    libp2p_metrics: libp2p::metrics::Metrics,
    metrics: Metrics,
    policy: AddressPolicy,
    bootstrap: Bootstrapper,
    /// Next refresh of the gossip score gauge, rate-limit pruning and active-view upkeep.
    next_housekeeping: Instant,
    housekeepings: u64,
    peers: Peers,
    view: ActiveView,
    relay: Relay,
    dht: Dht,
    tasks: TaskRouter,
    probes: Probes,
    records: Records,
    gossip: Gossip,
    catch_up: CatchUp,
}

/// What the event loop is built from; `network::new` assembles it.
pub(in crate::network) struct Parts {
    pub swarm: Swarm<Behaviour>,
    pub signing_key: Keypair,
    pub names: ProtocolNames,
    pub commands: mpsc::Receiver<Command>,
    pub events: mpsc::Sender<NetworkEvent>,
    pub libp2p_metrics: libp2p::metrics::Metrics,
    pub metrics: Metrics,
    pub tracker: TaskTracker,
}

impl EventLoop {
    pub(in crate::network) fn new(p: Parts, config: &Config) -> Self {
        let local: PeerId = *p.swarm.local_peer_id();
        let (lane_tx, lane_events) = mpsc::channel(COMMAND_CHANNEL);
        let control = p.swarm.behaviour().streams.new_control();
        let catch_up = CatchUp::new(control, p.names.members.clone(), p.tracker.clone(), p.metrics.clone());
        let held = catch_up.held().clone();
        let tasks = TaskRouter::new(&p.swarm, config, p.names.task_lane.clone(), lane_tx, p.tracker, p.metrics.clone());
        Self {
            commands: p.commands,
            events: p.events,
            outbox: VecDeque::new(),
            lane_events,
            libp2p_metrics: p.libp2p_metrics,
            policy: AddressPolicy { loopback_ok: config.node.listen_address.is_loopback() },
            bootstrap: Bootstrapper::new(&config.network.bootstrap_peers, Instant::now()),
            next_housekeeping: Instant::now(),
            housekeepings: 0,
            peers: Peers::new(config.network.protocol_version.clone()),
            view: ActiveView::new(local, config.node.role, config.network.active_peers, config.node.max_connections),
            relay: Relay::new(config, p.metrics.clone()),
            dht: Dht::new(p.names.kad.clone()),
            tasks,
            probes: Probes::new(local, p.metrics.clone()),
            records: Records::new(p.metrics.clone()),
            gossip: Gossip::new(p.signing_key, &p.names, config.ledger.enabled, held, p.metrics.clone()),
            catch_up,
            metrics: p.metrics,
            swarm: p.swarm,
        }
    }

    /// Runs until `shutdown` is cancelled or every `Client` is dropped, then carries out the
    /// commands already sent and closes all connections so peers see an orderly leave.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.gossip.subscribe(&mut self.swarm);
        self.tasks.serve_lanes();
        self.catch_up.serve();
        let tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(tick);
        let events = self.events.clone();
        // The outbox is full: the swarm's arm is disabled until the core takes some.
        let mut held_back = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(event) = self.lane_events.recv(), if self.outbox.len() < OUTBOX_LIMIT => self.on_lane_event(event),
                Some((peer, pulled)) = self.catch_up.results.recv(), if self.outbox.len() < OUTBOX_LIMIT => {
                    self.on_pulled(peer, pulled);
                }
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.outbox.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => break,
                },
                () = &mut tick => {
                    self.on_tick();
                    tick.as_mut().reset(self.next_tick(Instant::now()).into());
                }
                event = self.swarm.select_next_some(), if self.outbox.len() < OUTBOX_LIMIT => {
                    self.on_swarm_event(event);
                    // A lost bootstrap connection is redialed at once, not at the next tick; a
                    // peer new to the routing table brings the fast ticks in from now.
                    let fast = (self.dht.take_entered() && self.view.partial()).then(|| Instant::now() + FAST_TICK);
                    let sooner = fast.into_iter().chain(self.bootstrap.next_attempt()).min();
                    if let Some(at) = sooner.filter(|at| *at < tick.deadline().into_std()) {
                        tick.as_mut().reset(at.into());
                    }
                }
            }
            let full = self.outbox.len() >= OUTBOX_LIMIT;
            if full && !held_back {
                tracing::debug!(
                    events = self.outbox.len(),
                    "the core is behind: connections not read until it catches up"
                );
                self.metrics.network_held_back.inc();
            }
            held_back = full;
        }
        self.close().await;
    }

    /// When to tick next: `TICK` from `now`, or `FAST_TICK` while Kademlia's bootstraps need
    /// cutting, or sooner when a bootstrap redial falls due.
    fn next_tick(&self, now: Instant) -> Instant {
        let fast = self.dht.wants_fast_ticks(&self.swarm, now, self.view.partial());
        let at = now + if fast { FAST_TICK } else { TICK };
        self.bootstrap.next_attempt().map_or(at, |due| at.min(due.max(now)))
    }

    /// Carries out what the application asked for before it told us to stop (its farewell
    /// heartbeat above all), gives the swarm a moment to put those bytes on the wire, then
    /// closes every connection.
    async fn close(&mut self) {
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
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while self.swarm.connected_peers().next().is_some() {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    /// A neighbour's answer to our pull: its advertisements opened and checked, the news passed on.
    fn on_pulled(&mut self, peer: PeerId, pulled: Pulled) {
        match pulled {
            Ok(ads) => {
                let mut news = Vec::new();
                self.gossip.open_pulled(peer, &ads, &mut news);
                tracing::debug!(%peer, held = ads.len(), news = news.len(), "caught up on members");
                self.catch_up.finished(true);
                self.outbox.extend(news);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "members pull failed");
                self.catch_up.finished(false);
            }
        }
    }

    fn emit(&mut self, event: NetworkEvent) {
        self.outbox.push_back(event);
    }

    fn emit_some(&mut self, event: Option<NetworkEvent>) {
        if let Some(event) = event {
            self.outbox.push_back(event);
        }
    }
}
