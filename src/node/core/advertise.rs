//! When this node gossips about itself, and what it says: heartbeats on their timer and
//! the capability advertisement when its content or load changes, as a refresh, and for
//! newcomers. Pure: every method takes `now` and the caller publishes.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::config::NodeConfig;
use crate::membership::{MemberState, Membership};
use crate::network::NatStatus;
use crate::protocol::{CapabilityAdvertisement, GossipMessage, HeartBeat, MAX_RUMORS, WIRE_VERSION, WireRumor};

/// Advertisements are batched: at most one per this period when load changes.
pub(super) const AD_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Advertisements go out when their content changes; unchanged, every this many heartbeats.
pub(super) const AD_REFRESH_HEARTBEATS: u64 = 5;
/// A new subscriber is sent our advertisement, but at most once per this gap: when many nodes
/// join at once, one advertisement serves them all instead of one each.
pub(super) const SUBSCRIBE_AD_GAP: Duration = Duration::from_secs(1);

/// Heartbeats per second a cluster larger than its active view sends in all when nothing
/// changes: each node's heartbeat interval stretches to `members / IDLE_HEARTBEATS_PER_SEC`
/// seconds when that is longer than the configured one (see [`heartbeat_interval`]).
pub(super) const IDLE_HEARTBEATS_PER_SEC: u32 = 2;

/// How often this node sends its periodic heartbeat in a cluster of `members` (ourselves
/// included): `configured` (`node.heartbeat_interval`), unless the cluster is larger than the
/// active view (`partial_view`), where all heartbeats together stay within
/// [`IDLE_HEARTBEATS_PER_SEC`].
///
/// Every heartbeat is flooded to every member, so at a fixed interval the cluster's idle
/// gossip grows with N² (each of N nodes handles a copy of every node's heartbeat from each of
/// its mesh peers): at 100 nodes and 10 s they were 0.8 of the 1.1 cores an idle cluster used
/// on this machine. In a partial view they are not how failures are found (each member is
/// pinged by the neighbours of its active view, whose suspicions and the member's refutations
/// are flooded at once, as are joins, leaves and capability changes): they refresh what
/// gossip already said, and a member heard of for none of three intervals is probed.
pub(super) fn heartbeat_interval(configured: Duration, members: usize, partial_view: bool) -> Duration {
    if !partial_view {
        return configured;
    }
    let members = u32::try_from(members).unwrap_or(u32::MAX);
    configured.max(Duration::from_secs(1) * members / IDLE_HEARTBEATS_PER_SEC)
}

/// The timing of this node's gossip about itself.
#[derive(Debug)]
pub(super) struct Advertiser {
    /// When the next advertisement goes out (at the first tick from then), if one is due.
    due: Option<Instant>,
    last_load: Option<u32>,
    last_at: Instant,
    /// GossipSub subscriptions of peers seen so far, and how many had been seen when we last
    /// advertised (0: that advertisement reached nobody).
    subscriptions: u64,
    audience: u64,
    heartbeats: u64,
    /// The `seq` of our next gossip message: counted from our start time in milliseconds, so a
    /// restarted node never repeats a message of its previous run (see
    /// [`CapabilityAdvertisement::seq`](crate::protocol::CapabilityAdvertisement::seq)).
    seq: u64,
}

impl Advertiser {
    /// The first advertisement is due at once; `start_ms` is the start time in milliseconds.
    pub fn new(now: Instant, start_ms: u64) -> Self {
        Self {
            due: Some(now),
            last_load: None,
            last_at: now,
            subscriptions: 0,
            audience: 0,
            heartbeats: 0,
            seq: start_ms,
        }
    }

    /// What we advertise changed (a new listen address, the NAT status): advertise at the
    /// next tick, unless an advertisement is already due earlier.
    pub fn content_changed(&mut self, now: Instant) {
        self.due.get_or_insert(now);
    }

    /// A local task finished, so the load changed: advertise, batched with other changes.
    pub fn task_finished(&mut self, now: Instant) {
        self.due.get_or_insert(now + AD_MIN_INTERVAL);
    }

    /// A heartbeat went out; every `AD_REFRESH_HEARTBEATS`th one also refreshes the advertisement.
    pub fn heartbeat_sent(&mut self, now: Instant) {
        self.heartbeats += 1;
        if self.heartbeats.is_multiple_of(AD_REFRESH_HEARTBEATS) {
            self.due.get_or_insert(now);
        }
    }

    /// A peer subscribed to one of our topics; `has_our_ad` as [`has_our_advertisement`] decides.
    pub fn on_subscribed(&mut self, now: Instant, has_our_ad: bool) {
        self.subscriptions += 1;
        if !has_our_ad {
            // The gap between advertisements counts only from one somebody could hear: a
            // node's first advertisement goes out before any peer subscribed, and waiting
            // a gap after it kept a joining worker unschedulable for its first second.
            let soon = now + Duration::from_millis(50);
            let earliest = if self.audience == 0 { soon } else { soon.max(self.last_at + SUBSCRIBE_AD_GAP) };
            self.due = Some(self.due.map_or(earliest, |due| due.min(earliest)));
        }
    }

    /// At a tick with the current `load`: whether to advertise now. When it says so, the
    /// caller publishes and reports it with [`Advertiser::advertised`].
    pub fn take_due(&mut self, now: Instant, load: u32) -> bool {
        if self.last_load != Some(load) && now.duration_since(self.last_at) >= AD_MIN_INTERVAL {
            self.due.get_or_insert(now);
        }
        if self.due.is_some_and(|due| due <= now) {
            self.due = None;
            return true;
        }
        false
    }

    /// When an advertisement is due, if one is (`take_due` says so from then on).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// An advertisement carrying `load` went out.
    pub fn advertised(&mut self, now: Instant, load: u32) {
        self.last_load = Some(load);
        self.last_at = now;
        self.audience = self.subscriptions;
    }

    /// The `seq` for our next gossip message (heartbeat or advertisement).
    pub fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

/// Whether a peer that just subscribed has had our advertisement already.
///
/// In a cluster larger than the active view (`partial_view`), connections between members
/// come and go (a lookup's, a probe's): a member we know as alive and advertising has had
/// our advertisement, and re-advertising to the whole cluster for each such connection made
/// most of the gossip at 100 nodes. A newcomer still gets it.
pub(super) fn has_our_advertisement(partial_view: bool, membership: &Membership<PeerId>, peer: &PeerId) -> bool {
    partial_view && membership.get(peer).is_some_and(|m| m.state == MemberState::Alive && m.info.is_some())
}

/// The addresses to advertise: the configured external ones, then those we listen on that
/// others can dial.
pub(super) fn advertised_addresses(
    external: &[Multiaddr],
    listening: &[Multiaddr],
    loopback_ok: bool,
    nat: NatStatus,
) -> Vec<String> {
    let mut addresses: Vec<String> = external.iter().map(|a| a.to_string()).collect();
    // Behind NAT only the relay circuit reaches us; a private LAN address would lead a
    // dialer to some other host (or itself) on a network numbered like ours.
    let behind_nat = nat == NatStatus::Private;
    addresses.extend(
        listening
            .iter()
            .filter(|a| !crate::network::is_unroutable(a))
            .filter(|a| loopback_ok || !crate::network::is_loopback(a))
            .filter(|a| !behind_nat || a.iter().any(|p| p == Protocol::P2pCircuit))
            .map(|a| a.to_string()),
    );
    addresses.truncate(16);
    addresses
}

/// Our heartbeat, carrying the freshest rumors membership has first-hand.
pub(super) fn heartbeat(membership: &Membership<PeerId>, load: u32, seq: u64) -> GossipMessage {
    let rumors: Vec<WireRumor> = membership
        .active_rumors()
        .into_iter()
        .take(MAX_RUMORS)
        .map(|r| WireRumor { peer: r.peer.to_string(), state: r.state, incarnation: r.incarnation })
        .collect();
    GossipMessage::HeartBeat(HeartBeat {
        v: WIRE_VERSION,
        node: membership.local().to_string(),
        incarnation: membership.local_incarnation(),
        state: membership.local_state(),
        load,
        seq,
        rumors,
    })
}

/// What we are offering: this node's role, capabilities, `capacity` and `load`, and where it
/// can be reached (`listening`: the addresses it listens on).
pub(super) fn advertisement(
    membership: &Membership<PeerId>,
    node: &NodeConfig,
    listening: &[Multiaddr],
    nat: NatStatus,
    capacity: u32,
    load: u32,
    seq: u64,
) -> GossipMessage {
    let loopback_ok = node.listen_address.is_loopback();
    GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
        v: WIRE_VERSION,
        node: membership.local().to_string(),
        incarnation: membership.local_incarnation(),
        role: node.role.to_string(),
        capabilities: node.capabilities.clone(),
        capacity,
        load,
        addresses: advertised_addresses(&node.external_addresses, listening, loopback_ok, nat),
        seq,
    })
}

#[cfg(test)]
mod tests;
