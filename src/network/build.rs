//! Building the swarm from the configuration: transports, security, listeners, and which
//! behaviours a role switches on. Nothing else: `network::new` assembles the rest.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, Swarm, SwarmBuilder, Transport as _, autonat, connection_limits, dcutr, identify, kad, mdns,
    memory_connection_limits, noise, ping, relay, request_response, tcp, tls, yamux,
};
use prometheus_client::registry::Registry;

use super::behaviour::Behaviour;
use super::codec::Counted;
use super::names::{KAD_ALPHA, KAD_K, ProtocolNames};
use crate::config::{Config, Role, Security};
use crate::metrics::Metrics;
use crate::protocol::{
    MAX_PROBE_BYTES, MAX_RECORDS_REQUEST_BYTES, MAX_RECORDS_RESPONSE_BYTES, MAX_TASK_REQUEST_BYTES,
    MAX_TASK_RESPONSE_BYTES, ProbeRequest, ProbeResponse, RecordsRequest, RecordsResponse, TaskRequest, TaskResponse,
};
use crate::store::Store;
use crate::store::dht::DhtStore;
/// Connections stay open while idle: membership reads a closed connection as a failure signal
/// and tasks must not pay for a dial.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// libp2p's ping on every connection (see `behaviour`).
const PING_INTERVAL: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("transport setup failed: {0}")]
    Transport(String),
    #[error("behaviour setup failed: {0}")]
    Behaviour(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("security.psk_file: {0}")]
    Psk(#[from] crate::identity::IdentityError),
}

/// What carries the swarm's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// TCP, and QUIC when enabled, on `node.listen_address` and `node.listen_port`.
    Tcp,
    /// libp2p's in-process memory transport on a fresh `/memory/<n>`, under the same
    /// upgrades and behaviours: the whole stack above the socket, in one process, no ports.
    Memory,
}

/// What every transport's swarm is finished with.
struct Setup<'a> {
    config: &'a Config,
    names: &'a ProtocolNames,
    registry: &'a mut Registry,
    metrics: &'a Metrics,
    store: Option<&'a Store>,
    handshake_timeout: Duration,
}

/// Builds the swarm on `transport` and starts listening.
pub(super) fn swarm(
    config: &Config,
    names: &ProtocolNames,
    keypair: Keypair,
    registry: &mut Registry,
    metrics: &Metrics,
    store: Option<&Store>,
    transport: Transport,
) -> Result<Swarm<Behaviour>, BuildError> {
    let handshake_timeout = Duration::from_secs(config.network.connection_timeout);
    let psk = config.security.psk_file.as_deref().map(crate::identity::read_psk).transpose()?;
    if let Some(key) = &psk {
        tracing::info!(fingerprint = %key.fingerprint(), "private cluster: pre-shared key required on every connection");
    }
    let mut setup = Setup { config, names, registry, metrics, store, handshake_timeout };
    let mut swarm = match transport {
        Transport::Tcp => tcp_swarm(&mut setup, keypair, psk)?,
        Transport::Memory => memory_swarm(&mut setup, keypair, psk)?,
    };

    // Pods and local processes never get a confirmed external address on their own, so waiting
    // for one would leave every node a DHT client. AutoNAT demotes a worker behind NAT later.
    swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));

    for addr in listen_addresses(config, transport) {
        let ma: libp2p::Multiaddr =
            addr.parse().map_err(|e| BuildError::Listen { addr: addr.clone(), reason: format!("{e}") })?;
        swarm.listen_on(ma).map_err(|e| BuildError::Listen { addr, reason: e.to_string() })?;
    }
    for addr in &config.node.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    Ok(swarm)
}

fn listen_addresses(config: &Config, transport: Transport) -> Vec<String> {
    if transport == Transport::Memory {
        // Port 0: the memory transport picks a free one, like TCP's port 0.
        return vec!["/memory/0".into()];
    }
    let ip = config.node.listen_address;
    let port = config.node.listen_port;
    let ip_proto = if ip.is_ipv4() { "ip4" } else { "ip6" };
    let mut listen = vec![format!("/{ip_proto}/{ip}/tcp/{port}")];
    if config.network.enable_quic {
        listen.push(format!("/{ip_proto}/{ip}/udp/{port}/quic-v1"));
    }
    listen
}

/// The layers above every transport: DNS, the relay client, bandwidth metrics, the
/// behaviours and the swarm's settings.
macro_rules! finish {
    ($builder:expr, $setup:expr) => {{
        let setup: &mut Setup = $setup;
        let (config, names, metrics, store) = (setup.config, setup.names, setup.metrics, setup.store);
        $builder
            .with_dns()
            .map_err(|e| BuildError::Transport(e.to_string()))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| BuildError::Transport(e.to_string()))?
            .with_bandwidth_metrics(setup.registry)
            .with_behaviour(|key, relay_client| make_behaviour(config, names, key, relay_client, metrics, store))
            .map_err(|e| BuildError::Behaviour(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .with_connection_timeout(setup.handshake_timeout)
            .build()
    }};
}

/// The swarm on TCP (and QUIC on an open cluster).
fn tcp_swarm(setup: &mut Setup, keypair: Keypair, psk: Option<PreSharedKey>) -> Result<Swarm<Behaviour>, BuildError> {
    let handshake_timeout = setup.handshake_timeout;
    // A private cluster: every TCP connection proves the pre-shared key (pnet) before
    // multistream-select, so a node without it never reaches a security handshake, let alone
    // an application protocol. QUIC cannot be wrapped; config validation keeps it off.
    macro_rules! private_tcp {
        ($psk:expr, $tcp_config:expr, $security:path) => {{
            let (psk, tcp_config) = ($psk, $tcp_config);
            SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_other_transport(|key| -> Result<_, BoxError> {
                    Ok(tcp::tokio::Transport::new(tcp_config)
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(<$security>::new(key)?)
                        .multiplex(yamux::Config::default())
                        .timeout(handshake_timeout))
                })
                .map_err(|e| BuildError::Transport(e.to_string()))?
        }};
    }

    let tcp_config = tcp::Config::default().nodelay(true);
    // Both security protocols are offered on an open cluster; the configured one is preferred.
    Ok(match (psk, setup.config.network.security) {
        (Some(psk), Security::Noise) => finish!(private_tcp!(psk, tcp_config, noise::Config), setup),
        (Some(psk), Security::Tls) => finish!(private_tcp!(psk, tcp_config, tls::Config), setup),
        (None, Security::Noise) => finish!(
            SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(tcp_config, (noise::Config::new, tls::Config::new), yamux::Config::default)
                .map_err(|e| BuildError::Transport(e.to_string()))?
                .with_quic(),
            setup
        ),
        (None, Security::Tls) => finish!(
            SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(tcp_config, (tls::Config::new, noise::Config::new), yamux::Config::default)
                .map_err(|e| BuildError::Transport(e.to_string()))?
                .with_quic(),
            setup
        ),
    })
}

/// The swarm on libp2p's memory transport (for tests in one process).
fn memory_swarm(
    setup: &mut Setup,
    keypair: Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Swarm<Behaviour>, BuildError> {
    let (security, timeout) = (setup.config.network.security, setup.handshake_timeout);
    Ok(finish!(
        SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| memory_transport(key, psk, security, timeout))
            .map_err(|e| BuildError::Transport(e.to_string()))?,
        setup
    ))
}

/// The memory transport upgraded as TCP is: the pre-shared key when the cluster has one,
/// then the configured security (only that one: every node of a test is configured alike)
/// and yamux. Boxed, so that the four combinations build one swarm type.
fn memory_transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
    security: Security,
    timeout: Duration,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    macro_rules! upgraded {
        ($base:expr, $security:path) => {
            $base
                .upgrade(Version::V1Lazy)
                .authenticate(<$security>::new(key)?)
                .multiplex(yamux::Config::default())
                .timeout(timeout)
                .boxed()
        };
    }
    let memory = MemoryTransport::default();
    Ok(match (psk, security) {
        (Some(psk), Security::Noise) => {
            upgraded!(memory.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)), noise::Config)
        }
        (Some(psk), Security::Tls) => {
            upgraded!(memory.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)), tls::Config)
        }
        (None, Security::Noise) => upgraded!(memory, noise::Config),
        (None, Security::Tls) => upgraded!(memory, tls::Config),
    })
}

fn make_behaviour(
    config: &Config,
    names: &ProtocolNames,
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    metrics: &Metrics,
    store: Option<&Store>,
) -> Result<Behaviour, BoxError> {
    let peer_id = key.public().to_peer_id();
    let net = &config.network;
    let gossipsub = if net.mesh_network { Some(super::gossip_settings::behaviour(config, names)?) } else { None };
    let mdns =
        if net.enable_mdns { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?) } else { None };
    let (relay_client, dcutr) =
        if net.enable_relay { (Some(relay_client), Some(dcutr::Behaviour::new(peer_id))) } else { (None, None) };
    // Failure detection no longer rests on ping: membership pings one member per protocol
    // period (SWIM) over the probe protocol. libp2p's ping is left for RTT figures and to keep
    // idle paths (NAT mappings, which keep an idle TCP flow for minutes) warm: every 60 s
    // rather than its default 15 s, a round trip and a timer per connection. At one second it
    // cost N-1 round trips per node per second, which saturates 2 cores at 100 nodes.
    let ping = ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL));
    Ok(Behaviour {
        limits: connection_limits(config),
        memory: memory_connection_limits::Behaviour::with_max_percentage(
            f64::from(config.limits.max_memory_percent) / 100.0,
        ),
        identify: identify(config, key),
        ping,
        kad: kad(config, names, peer_id, store),
        gossipsub: Toggle::from(gossipsub),
        mdns: Toggle::from(mdns),
        autonat: autonat(config, peer_id),
        relay_server: Toggle::from(relay_server(config, peer_id)),
        relay_client: Toggle::from(relay_client),
        dcutr: Toggle::from(dcutr),
        streams: libp2p_stream::Behaviour::new(),
        tasks: tasks(config, names, metrics),
        probe: probe(config, names, metrics),
        records: records(config, names, metrics),
    })
}

fn connection_limits(config: &Config) -> connection_limits::Behaviour {
    let l = &config.limits;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.node.max_connections))
        .with_max_established_per_peer(Some(l.max_connections_per_peer))
        .with_max_pending_incoming(Some(l.max_pending_incoming))
        .with_max_pending_outgoing(Some(l.max_pending_outgoing));
    connection_limits::Behaviour::new(limits)
}

fn identify(config: &Config, key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new(config.network.protocol_version.clone(), key.public())
            .with_agent_version(format!("p2p-node/{} role={}", env!("CARGO_PKG_VERSION"), config.node.role))
            .with_push_listen_addr_updates(true)
            // libp2p's default: changes are pushed at once (above); the periodic exchange only
            // repeats them, on every connection (about 35 per node at 100 nodes).
            .with_interval(Duration::from_secs(300))
            // No address book: it would keep every address a peer listens on, loopback and
            // LAN ones included, and offer them to every dial of that peer, where one that
            // reaches ourselves fails the whole dial. Kademlia (filtered on the way in) and
            // the advertisements say where peers are.
            .with_cache_size(0),
    )
}

fn kad(config: &Config, names: &ProtocolNames, peer_id: PeerId, store: Option<&Store>) -> kad::Behaviour<DhtStore> {
    let mut kad_config = kad::Config::new(names.kad.clone());
    kad_config
        .set_kbucket_size(NonZeroUsize::new(KAD_K).expect("k is a non-zero constant"))
        .set_parallelism(NonZeroUsize::new(KAD_ALPHA).expect("alpha is a non-zero constant"))
        .set_replication_factor(
            NonZeroUsize::new(config.tasks.storage_replication).expect("validated to be at least 1"),
        )
        .set_query_timeout(Duration::from_secs(10))
        // The event loop refreshes the routing table itself, less often in a large cluster.
        .set_periodic_bootstrap_interval(None)
        // The event loop fills the routing table (`Dht::learn_address`): left to insert
        // on every outbound connection, Kademlia would check a full bucket's disconnected
        // entries by dialing them, and outside the active view those are disconnected on purpose.
        .set_kbucket_inserts(kad::BucketInserts::Manual);
    // Records are written through to the node's store, so they outlive a restart.
    let store = DhtStore::open(
        peer_id,
        kad::store::MemoryStoreConfig { max_records: 65_536, max_value_bytes: 64 * 1024, ..Default::default() },
        store,
    );
    kad::Behaviour::with_config(peer_id, store, kad_config)
}

fn autonat(config: &Config, peer_id: PeerId) -> autonat::Behaviour {
    // Inside a cluster every address is private; AutoNAT's default would ignore them all.
    autonat::Behaviour::new(
        peer_id,
        autonat::Config {
            only_global_ips: false,
            // A dial-back may take a whole handshake timeout; the request must outlive it.
            timeout: Duration::from_secs(config.network.connection_timeout + 10),
            // Two agreeing dial-backs settle the status (then one every 15 minutes): inside a
            // cluster every peer sees the same network. libp2p's 3 meant four dial-backs per
            // node in its first 95 s, each a connection the active view closes again (half of
            // an idle 100-node cluster's connection churn in that time).
            boot_delay: Duration::from_secs(5),
            retry_interval: Duration::from_secs(10),
            confidence_max: 1,
            throttle_server_period: Duration::from_secs(15),
            ..Default::default()
        },
    )
}

/// The circuit relay server, on the relay role only.
fn relay_server(config: &Config, peer_id: PeerId) -> Option<relay::Behaviour> {
    if config.node.role != Role::Relay {
        return None;
    }
    let r = &config.relay;
    let mut c = relay::Config {
        max_reservations: r.max_reservations,
        max_reservations_per_peer: r.max_reservations_per_peer,
        max_circuits: r.max_circuits,
        max_circuits_per_peer: r.max_circuits_per_peer,
        max_circuit_duration: Duration::from_secs(r.max_circuit_duration_secs),
        max_circuit_bytes: r.max_circuit_bytes,
        // Replace libp2p's default rate limiters with the configured ones.
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..Default::default()
    };
    let minute = Duration::from_secs(60);
    if let Some(n) = NonZeroU32::new(r.circuits_per_peer_per_minute) {
        c = c.circuit_src_per_peer(n, minute);
    }
    if let Some(n) = NonZeroU32::new(r.circuits_per_ip_per_minute) {
        c = c.circuit_src_per_ip(n, minute);
    }
    if let Some(n) = NonZeroU32::new(r.reservations_per_peer_per_minute) {
        c = c.reservation_rate_per_peer(n, minute);
    }
    Some(relay::Behaviour::new(peer_id, c))
}

fn tasks(
    config: &Config,
    names: &ProtocolNames,
    metrics: &Metrics,
) -> request_response::Behaviour<Counted<TaskRequest, TaskResponse>> {
    request_response::Behaviour::with_codec(
        Counted::tasks(MAX_TASK_REQUEST_BYTES, MAX_TASK_RESPONSE_BYTES, metrics.clone()),
        [(names.tasks.clone(), request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            // The gateway enforces each task's own deadline; this only reaps lost streams.
            .with_request_timeout(Duration::from_secs(3600))
            .with_max_concurrent_streams(config.limits.max_task_streams),
    )
}

/// How long a copy holder or a node asked for a record gets to answer.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(5);

fn records(
    config: &Config,
    names: &ProtocolNames,
    metrics: &Metrics,
) -> request_response::Behaviour<Counted<RecordsRequest, RecordsResponse>> {
    request_response::Behaviour::with_codec(
        Counted::records(MAX_RECORDS_REQUEST_BYTES, MAX_RECORDS_RESPONSE_BYTES, metrics.clone()),
        [(names.records.clone(), request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(RECORDS_TIMEOUT)
            .with_max_concurrent_streams(config.limits.max_task_streams),
    )
}

fn probe(
    config: &Config,
    names: &ProtocolNames,
    metrics: &Metrics,
) -> request_response::Behaviour<Counted<ProbeRequest, ProbeResponse>> {
    request_response::Behaviour::with_codec(
        Counted::probes(MAX_PROBE_BYTES, MAX_PROBE_BYTES, metrics.clone()),
        [(names.probe.clone(), request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            // Membership keeps each ping's deadline (stretched while this node is slow); the
            // transport only gives up at the longest it could be.
            .with_request_timeout(crate::membership::max_ping_wait(Duration::from_millis(
                config.membership.probe_timeout_ms,
            )))
            .with_max_concurrent_streams(config.limits.max_probe_streams),
    )
}
