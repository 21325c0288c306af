//! The DHT: the routing table (which only the event loop fills), discovery walks and
//! refreshes, and the storage capability's puts and gets matched to their replies by
//! Kademlia's own query ids.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad};

use super::behaviour::Behaviour;
use super::client::{GetReply, PutOutcome, PutReply};
use super::event::NetworkEvent;
use super::names::KAD_K;

/// Random walks find peers nobody told us about; frequent at first, then relaxed.
const WALK_FAST: Duration = Duration::from_secs(2);
const WALK_SLOW: Duration = Duration::from_secs(30);
const FAST_WALKS: u32 = 5;
/// Kademlia's bootstrap (a lookup of our own id, then one per bucket: about 200 requests at
/// 100 nodes) refreshes the routing table this often, while the cluster fits in the active
/// view.
///
/// In a cluster larger than the active view there are no walks and no refreshes after the
/// join: a lookup's requests mostly reach peers we are not connected to, each a connection's
/// handshake that the view closes again (at 100 nodes, walks and refreshes every 5 minutes
/// still opened 33 connections a second cluster-wide, most of the idle CPU). Membership
/// gossip names every member and each advertisement feeds the routing table its addresses
/// (`learn_address`), so the table stays full without them.
const REFRESH: Duration = Duration::from_secs(60);
/// libp2p-kad starts its bootstrap 500 ms after a peer enters a small routing table; the
/// event loop ticks fast for this long after one did (`wants_fast_ticks`).
const BOOTSTRAP_START_WINDOW: Duration = Duration::from_millis(1500);
/// The routing table's size is counted (and reported when it changed) this often.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// A joiner looks up its own id only if its routing table still holds fewer than k entries
/// this long after its first bootstrap connection (see `on_joined`).
const JOIN_LOOKUP_AFTER: Duration = Duration::from_secs(3);

pub(super) struct Dht {
    /// Our Kademlia protocol name: a peer that speaks it belongs in the routing table.
    protocol: StreamProtocol,
    /// Each put's reply and how many peers it asked for.
    pending_puts: HashMap<kad::QueryId, (PutReply, usize)>,
    pending_gets: HashMap<kad::QueryId, GetReply>,
    walks: u32,
    next_walk: Instant,
    /// The last Kademlia bootstrap (routing-table refresh, or the one on joining); see `REFRESH`.
    last_refresh: Instant,
    joined_once: bool,
    /// When to look up our own id if the routing table is still small (see `on_joined`).
    join_lookup_at: Option<Instant>,
    /// The routing table's size last reported to the application, and when it is next counted.
    reported_size: Option<usize>,
    next_count: Instant,
    /// The records this node published, reloaded from its store, were put again after it
    /// joined (Kademlia's own republishing waits a day).
    republished: bool,
    /// When a peer last entered the routing table: libp2p-kad starts a bootstrap half a second
    /// later (see `stop_bootstraps`).
    last_table_entry: Option<Instant>,
    /// A peer entered the routing table since the event loop last asked (`take_entered`).
    entered: bool,
}

impl Dht {
    pub fn new(protocol: StreamProtocol) -> Self {
        Self {
            protocol,
            pending_puts: HashMap::new(),
            pending_gets: HashMap::new(),
            walks: 0,
            next_walk: Instant::now() + WALK_FAST,
            last_refresh: Instant::now(),
            joined_once: false,
            join_lookup_at: None,
            reported_size: None,
            next_count: Instant::now(),
            republished: false,
            last_table_entry: None,
            entered: false,
        }
    }

    /// Whether a peer Identify told us about serves our DHT.
    pub fn speaks(&self, info: &identify::Info) -> bool {
        info.protocols.contains(&self.protocol)
    }

    /// Adds an address of `peer` to the routing table (the only way in: Kademlia's own
    /// inserts are off, see `network/build.rs`), unless `peer` is new to a full bucket.
    /// There Kademlia would dial the bucket's least recently seen disconnected entry
    /// to see whether it still lives. In a partial view most entries are disconnected on
    /// purpose (alive, outside the view): each check is a connection the active view closes
    /// 10 s later, and the checked peer learns of us in turn and checks one of its own, a
    /// chain of dials that never ends. Entries leave the table when the core finds them dead
    /// or gone (`Command::Forget`) instead.
    pub fn learn_address(swarm: &mut Swarm<Behaviour>, peer: &PeerId, address: Multiaddr) {
        let kad = &mut swarm.behaviour_mut().kad;
        let full = kad.kbucket(*peer).is_some_and(|bucket| {
            bucket.num_entries() >= KAD_K && !bucket.iter().any(|e| e.node.key.preimage() == peer)
        });
        if !full {
            kad.add_address(peer, address);
        }
    }

    /// The first connection to a bootstrap peer: join the DHT through it.
    pub fn on_joined(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, address: Option<Multiaddr>) {
        if self.joined_once {
            return;
        }
        self.joined_once = true;
        tracing::info!(%peer, "connected to bootstrap peer");
        if let Some(address) = address {
            Self::learn_address(swarm, &peer, address);
        }
        // The members' advertisements fill the routing table (`learn_address`): the first
        // catch-up pull, from this very peer, brings every member's at once. A lookup of our
        // own id (about 23 requests at 100 nodes, nearly all to peers outside the active view,
        // each a handshake the view closes again: 2,300 connections when 100 nodes join at
        // once) is made only if the table is still small a few seconds later, say when the
        // bootstrap peer serves no catch-up. Not Kademlia's bootstrap either, which adds a
        // lookup per bucket (about 200 requests at 100 nodes).
        let now = Instant::now();
        self.join_lookup_at = Some(now + JOIN_LOOKUP_AFTER);
        self.last_refresh = now;
    }

    /// Puts again the records this node published (those reloaded from its store after a
    /// restart), so that the peers now closest to each key hold it. Replicas of others'
    /// records are left to their publishers and Kademlia's hourly replication.
    fn republish_own(swarm: &mut Swarm<Behaviour>) {
        use libp2p::kad::store::RecordStore;
        let local = *swarm.local_peer_id();
        let kad = &mut swarm.behaviour_mut().kad;
        let own: Vec<kad::Record> =
            kad.store_mut().records().filter(|r| r.publisher == Some(local)).map(|r| r.into_owned()).collect();
        if own.is_empty() {
            return;
        }
        tracing::info!(records = own.len(), "republishing the DHT records this node published");
        for record in own {
            // Nobody waits for these: their results are not in `pending_puts` and are dropped.
            let _ = kad.put_record(record, kad::Quorum::One);
        }
    }

    pub fn routing_table_size(swarm: &mut Swarm<Behaviour>) -> usize {
        swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    /// The routing table's entries `wanted` keeps: each peer with its addresses.
    pub fn entries(swarm: &mut Swarm<Behaviour>, wanted: impl Fn(&PeerId) -> bool) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut entries = Vec::new();
        for bucket in swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter().filter(|e| wanted(e.node.key.preimage())) {
                entries.push((*entry.node.key.preimage(), entry.node.value.iter().cloned().collect()));
            }
        }
        entries
    }

    /// Walks and refreshes when due (only while connected to someone, and never in a partial
    /// view: see `REFRESH`); tells the application when the routing table's size changed.
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, partial_view: bool) -> Option<NetworkEvent> {
        let connected = swarm.connected_peers().next().is_some();
        if now >= self.next_walk && connected && !partial_view {
            self.walks += 1;
            self.next_walk = now + if self.walks < FAST_WALKS { WALK_FAST } else { WALK_SLOW };
            // A lookup of a random id visits peers all over the key space, filling the routing
            // table with peers we were never told about.
            swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
        }
        if partial_view {
            Self::stop_bootstraps(swarm);
        }
        // Counting the table visits every bucket (it showed in an idle 100-node profile at
        // every tick): once a second.
        if now < self.next_count {
            return None;
        }
        self.next_count = now + COUNT_EVERY;
        let size = Self::routing_table_size(swarm);
        if self.join_lookup_at.is_some_and(|at| now >= at) {
            self.join_lookup_at = None;
            if size < KAD_K {
                tracing::debug!(size, "routing table still small after joining: looking up our own id");
                let local = *swarm.local_peer_id();
                swarm.behaviour_mut().kad.get_closest_peers(local);
            }
        }
        if !self.republished && size > 0 && (self.walks >= 1 || (partial_view && self.joined_once)) {
            self.republished = true;
            Self::republish_own(swarm);
        }
        if now.duration_since(self.last_refresh) >= REFRESH && connected && !partial_view {
            self.last_refresh = now;
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        (self.reported_size != Some(size)).then(|| {
            self.reported_size = Some(size);
            NetworkEvent::RoutingTable { size }
        })
    }

    /// Whether the event loop should tick fast (see `stop_bootstraps`): in a partial view,
    /// while a bootstrap runs or may start (libp2p-kad starts one half a second after a peer
    /// enters a table of fewer than k entries). Otherwise a tick a second does.
    pub fn wants_fast_ticks(&self, swarm: &Swarm<Behaviour>, now: Instant, partial_view: bool) -> bool {
        partial_view
            && (self.last_table_entry.is_some_and(|t| {
                now.duration_since(t) < BOOTSTRAP_START_WINDOW && self.reported_size.is_none_or(|n| n < KAD_K)
            }) || swarm
                .behaviour()
                .kad
                .iter_queries()
                .any(|q| matches!(q.info(), kad::QueryInfo::Bootstrap { .. })))
    }

    /// Whether a peer entered the routing table since the last call: the event loop then
    /// ticks fast from now, not from its next (up to a second away) tick, since libp2p-kad may
    /// start a bootstrap half a second later.
    pub fn take_entered(&mut self) -> bool {
        std::mem::take(&mut self.entered)
    }

    /// Cuts Kademlia's own bootstraps short. libp2p-kad starts one whenever a peer enters a
    /// routing table of fewer than k entries (it cannot be turned off), so every node joining
    /// a large cluster ran one: about 160 requests, mostly new connections, for up to a minute,
    /// all nodes at once (the first minute of a 100-node cluster, and most of its connection
    /// churn after). A bootstrap is a lookup per bucket and finishing one only moves it on to
    /// the next (libp2p offers no way to end it), so this runs at every tick, and the ticks come
    /// every 100 ms while one runs or may start (`wants_fast_ticks`): each lookup ends within
    /// 100 ms, after a few requests. In a partial view the table is fed by
    /// advertisements instead (see `REFRESH`).
    fn stop_bootstraps(swarm: &mut Swarm<Behaviour>) {
        for mut query in swarm.behaviour_mut().kad.iter_queries_mut() {
            if matches!(query.info(), kad::QueryInfo::Bootstrap { .. }) {
                query.finish();
            }
        }
    }

    pub fn put(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        key: Vec<u8>,
        value: Vec<u8>,
        replication: usize,
        reply: PutReply,
    ) {
        let record = kad::Record::new(key, value);
        let wanted = replication.min(Self::routing_table_size(swarm)).max(1);
        let quorum = std::num::NonZeroUsize::new(wanted).map_or(kad::Quorum::One, kad::Quorum::N);
        match swarm.behaviour_mut().kad.put_record(record, quorum) {
            Ok(qid) => {
                self.pending_puts.insert(qid, (reply, wanted));
            }
            Err(e) => {
                let _ = reply.send(Err(format!("local store refused the record: {e:?}")));
            }
        }
    }

    pub fn get(&mut self, swarm: &mut Swarm<Behaviour>, key: Vec<u8>, reply: GetReply) {
        let qid = swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
        self.pending_gets.insert(qid, reply);
    }

    /// Kademlia's events: query results go to whoever asked; a peer new to the routing table
    /// is returned with its addresses, for discovery to consider dialing.
    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, event: kad::Event) -> Option<(PeerId, Vec<Multiaddr>)> {
        match event {
            kad::Event::RoutingUpdated { peer, addresses, is_new_peer, .. } => {
                if is_new_peer {
                    self.last_table_entry = Some(Instant::now());
                    self.entered = true;
                }
                return Some((peer, addresses.into_vec()));
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::PutRecord(r) => self.on_put(id, r),
                kad::QueryResult::GetRecord(r) => self.on_get(swarm, id, r, step.last),
                kad::QueryResult::Bootstrap(Ok(_)) | kad::QueryResult::GetClosestPeers(Ok(_)) => {}
                other => tracing::debug!(result = ?other, "kad query finished"),
            },
            _ => {}
        }
        None
    }

    fn on_put(&mut self, id: kad::QueryId, result: kad::PutRecordResult) {
        if let Some((reply, wanted)) = self.pending_puts.remove(&id) {
            let _ = reply.send(match result {
                // The query ends as soon as the quorum (`wanted` peers) has stored it.
                Ok(_) => Ok(PutOutcome { stored: wanted, wanted }),
                Err(kad::PutRecordError::QuorumFailed { success, .. })
                | Err(kad::PutRecordError::Timeout { success, .. })
                    if !success.is_empty() =>
                {
                    Ok(PutOutcome { stored: success.len(), wanted })
                }
                Err(e) => Err(format!("DHT put failed: {e}")),
            });
        }
    }

    fn on_get(&mut self, swarm: &mut Swarm<Behaviour>, id: kad::QueryId, result: kad::GetRecordResult, last: bool) {
        match result {
            Ok(kad::GetRecordOk::FoundRecord(rec)) => {
                if let Some(reply) = self.pending_gets.remove(&id) {
                    let _ = reply.send(Ok(Some(rec.record.value)));
                    // One answer is enough; stop asking the rest of the DHT.
                    if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) | Err(kad::GetRecordError::NotFound { .. }) => {
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
        if last {
            self.pending_gets.remove(&id);
        }
    }
}
