//! The p2p network: one task owns the libp2p `Swarm`; everything else talks to it through
//! a cloneable [`Client`] and hears from it through [`NetworkEvent`]s.
//!
//! This is the boundary: swarm and behaviour events are translated here into the small
//! domain enum in `event`, so membership, scheduler, worker and API never import swarm types.
//!
//! Reading order: `client` (what the node asks) and `event` (what it hears) are the
//! boundary; `new` below builds the swarm (`build`, `behaviour`, `names`,
//! `gossip_settings`) and the `event_loop`, which routes each concern to its own sub-state:
//! `peers`, `active_view` (with the draw in `view`), `relay`, `dht` (with `discovery`'s
//! bootstrap dials), `tasks` (with `admission` and the `lanes`), `probes` and `gossip`.

mod active_view;
mod addresses;
mod admission;
mod behaviour;
mod build;
mod catch_up;
mod client;
pub mod codec;
mod dht;
mod discovery;
mod event;
mod event_loop;
pub mod frames;
mod gossip;
mod gossip_settings;
pub mod lanes;
mod names;
mod peers;
mod probes;
mod records;
mod relay;
mod tasks;
pub mod view;

use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use addresses::{is_loopback, is_unroutable};
pub use build::BuildError;
pub use client::{COMMAND_CHANNEL, Client, Closed, EVENT_CHANNEL, PutOutcome};
pub use event::{DispatchError, InboundId, NatStatus, NetworkEvent, NetworkStatus};
pub use event_loop::EventLoop;
pub use gossip_settings::{gossip_config, gossip_scoring, gossip_thresholds};
pub use names::{ProtocolNames, gossip_topics};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// Builds the swarm and starts listening, and returns the network's three pieces: the
/// client, the stream of events, and the event loop for the caller to run. Tasks the loop
/// starts (task lanes) are spawned on `tracker`, so the node can await them at shutdown.
/// Kademlia's records are kept in `store` as well as in memory.
pub fn new(
    config: &Config,
    keypair: Keypair,
    registry: &mut Registry,
    metrics: Metrics,
    tracker: TaskTracker,
    store: &Store,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop), BuildError> {
    assemble(config, keypair, registry, metrics, tracker, Some(store), build::Transport::Tcp)
}

/// [`new`] on libp2p's in-process memory transport instead of TCP and QUIC: listens on a
/// fresh `/memory/<n>` (reported as `NetworkEvent::Listening`); security, multiplexing, every
/// behaviour and the event loop are the ones [`new`] builds. For tests in one process;
/// bootstrap peers cannot be memory addresses (configuration requires TCP or QUIC), so such a
/// test connects its nodes with `Client::dial`.
#[doc(hidden)]
pub fn new_in_memory(
    config: &Config,
    keypair: Keypair,
    registry: &mut Registry,
    metrics: Metrics,
    tracker: TaskTracker,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop), BuildError> {
    assemble(config, keypair, registry, metrics, tracker, None, build::Transport::Memory)
}

fn assemble(
    config: &Config,
    keypair: Keypair,
    registry: &mut Registry,
    metrics: Metrics,
    tracker: TaskTracker,
    store: Option<&Store>,
    transport: build::Transport,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop), BuildError> {
    let names = ProtocolNames::new(&config.network.protocol_version);
    // The event loop seals gossip with it; the swarm takes the other copy.
    let signing_key = keypair.clone();
    let swarm = build::swarm(config, &names, keypair, registry, &metrics, store, transport)?;
    let (command_tx, commands) = mpsc::channel(COMMAND_CHANNEL);
    let (events_tx, events) = mpsc::channel(EVENT_CHANNEL);
    let client = Client::new(command_tx, *swarm.local_peer_id(), swarm.behaviour().streams.new_control());
    let libp2p_metrics = libp2p::metrics::Metrics::new(registry);
    let parts =
        event_loop::Parts { swarm, signing_key, names, commands, events: events_tx, libp2p_metrics, metrics, tracker };
    Ok((client, events, EventLoop::new(parts, config)))
}
