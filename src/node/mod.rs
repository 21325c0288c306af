//! Starting and stopping a node: identity, metrics registry, network, worker, core, HTTP
//! servers. `run` takes the shutdown signal as a future so tests can drive it; inside, one
//! mechanism stops everything in order (cancellation tokens), and every task the node starts
//! is on its task tracker and awaited before `run` returns.
//!
//! A task's path through the modules: `api` -> [`NodeHandle`] (`handle`) -> `core` ->
//! `scheduler` -> `network` -> a worker's `network` -> `worker` -> and back the same way.

mod core;
pub mod handle;
mod health;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::handle::{BatchSubmitted, HandleError, NodeHandle, Request, Submitted};
pub use self::health::Health;
pub use self::views::{
    CapabilitiesView, ClusterCapability, LocalCapabilities, MemberCounts, PeerView, StatusView, TaskCounts,
};
use crate::config::Config;
use crate::metrics::Metrics;

/// Longest time a leaving node waits for its running tasks.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the HTTP servers and the tasks still running get after the network closed.
const SERVERS_GRACE: Duration = Duration::from_secs(2);
/// Bound of the API-to-core request channel.
const REQUEST_CHANNEL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Network(#[from] crate::network::BuildError),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("node.data_dir: ledger: {0}")]
    Ledger(#[from] crate::store::StoreError),
    #[error("node.data_dir: modules: {0}")]
    Modules(#[from] crate::wasm::modules::ModuleStoreError),
    #[error("api.listen {addr}: cannot bind: {source}")]
    ApiBind { addr: String, source: std::io::Error },
    #[error("metrics.listen {addr}: cannot bind: {source}")]
    MetricsBind { addr: String, source: std::io::Error },
}

/// A node that has bound its sockets and is ready to run.
pub struct Node {
    config: Arc<Config>,
    network: crate::network::Client,
    network_events: mpsc::Receiver<crate::network::NetworkEvent>,
    event_loop: crate::network::EventLoop,
    /// Every task the node starts; awaited before `run` returns.
    tasks: TaskTracker,
    core_requests: mpsc::Receiver<Request>,
    handle: NodeHandle,
    api_listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    registry: prometheus_client::registry::Registry,
    metrics: Metrics,
    health: Arc<Health>,
    store: crate::store::Store,
    wasm: crate::wasm::WasmService,
    ledger: Option<(crate::ledger::LedgerHandle, crate::ledger::LedgerService)>,
    /// The identity file existed before this start: the peer id may own records elsewhere.
    known_identity: bool,
}

impl Node {
    /// Loads the identity and binds every socket, so all start-up errors surface here.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with_telemetry(config, prometheus_client::metrics::counter::Counter::default()).await
    }

    /// Like [`Node::start`], with the counter of the installed telemetry's dropped spans
    /// (`crate::telemetry::Telemetry::spans_dropped`) in the node's registry.
    pub async fn start_with_telemetry(
        config: Config,
        spans_dropped: prometheus_client::metrics::counter::Counter,
    ) -> Result<Self, StartError> {
        let (keypair, created) = crate::identity::load_or_create(&config.node.identity_file)?;
        let peer_id = keypair.public().to_peer_id();
        tracing::info!(%peer_id, role = %config.node.role, identity = %config.node.identity_file.display(),
            created, "starting node");
        let store = crate::store::Store::open(&config.node.data_dir)?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::with_spans_dropped(&mut registry, spans_dropped);
        let api_listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| StartError::ApiBind { addr: config.api.listen.to_string(), source })?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
            .await
            .map_err(|source| StartError::MetricsBind { addr: config.metrics.listen.to_string(), source })?;
        let tasks = TaskTracker::new();
        let ledger_key = keypair.clone();
        let (network, network_events, event_loop) =
            crate::network::new(&config, keypair, &mut registry, metrics.clone(), tasks.clone(), &store)?;
        let ledger = if config.ledger.enabled {
            Some(crate::ledger::LedgerHandle::open(
                &config.ledger,
                ledger_key,
                network.clone(),
                crate::store::ledger::LedgerStore::new(store.clone()),
                metrics.ledger.clone(),
                &config.network.protocol_version,
            )?)
        } else {
            None
        };
        let wasm = crate::wasm::WasmService::open(
            &config.wasm,
            &config.node.data_dir,
            &config.network.protocol_version,
            network.streams(),
        )?;
        let (tx, core_requests) = mpsc::channel(REQUEST_CHANNEL);
        let health = Arc::new(Health::default());
        health.touch();
        let handle = NodeHandle::new(tx, health.clone())
            .with_wasm(wasm.clone())
            .with_ledger(ledger.as_ref().map(|(h, _)| h.clone()));
        Ok(Self {
            config: Arc::new(config),
            network,
            network_events,
            event_loop,
            tasks,
            core_requests,
            handle,
            api_listener,
            metrics_listener,
            registry,
            metrics,
            health,
            store,
            wasm,
            ledger,
            known_identity: !created,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_listener.local_addr().expect("a bound listener has a local address")
    }

    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics_listener.local_addr().expect("a bound listener has a local address")
    }

    pub fn peer_id(&self) -> libp2p::PeerId {
        self.network.local_peer_id()
    }

    /// Runs until `shutdown` resolves, then leaves the cluster in an orderly way: the core
    /// leaves and drains, then the network flushes and closes, then the HTTP servers stop,
    /// and every task the node started is awaited. Dropping the future instead (a crash, in
    /// tests) aborts the network and the servers at once, without a goodbye.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let Node {
            config,
            network,
            network_events,
            event_loop,
            tasks,
            core_requests,
            handle,
            api_listener,
            metrics_listener,
            registry,
            metrics,
            health,
            store,
            wasm,
            ledger,
            known_identity,
        } = self;
        let stop_network = CancellationToken::new();
        let stop_servers = CancellationToken::new();
        let mut crash = AbortOnDrop(Vec::new());

        let network_task = tasks.spawn(event_loop.run(stop_network.clone()));
        crash.0.push(network_task.abort_handle());
        let (local_tx, local_rx) = mpsc::channel(crate::network::COMMAND_CHANNEL);
        // Any node serves the modules it holds: a gateway is where a worker fetches them from.
        wasm.serve(tasks.clone(), stop_servers.clone());
        let executor = (config.node.role == crate::config::Role::Worker).then(|| {
            crate::worker::Executor::new(network.clone(), &config, metrics.clone(), local_tx, tasks.clone(), wasm)
        });
        let api = crate::api::serve(api_listener, handle, stop_servers.clone().cancelled_owned());
        crash.0.push(tasks.spawn(api).abort_handle());
        let registry = Arc::new(registry);
        let scrape =
            crate::metrics::serve(metrics_listener, registry, metrics.clone(), stop_servers.clone().cancelled_owned());
        crash.0.push(tasks.spawn(scrape).abort_handle());

        // The ledger stops after the core (whose last completions it pays) and before the
        // network (which carries its last block).
        let stop_ledger = CancellationToken::new();
        let (ledger, ledger_task) = match ledger {
            Some((handle, service)) => {
                let task = tasks.spawn(service.run(tasks.clone(), stop_ledger.clone()));
                crash.0.push(task.abort_handle());
                (Some(handle), Some(task))
            }
            None => (None, None),
        };
        let copy_log = crate::store::copies::CopyLog::start(store.clone());
        let (task_log, committed) = crate::store::tasks::TaskLog::start(store);
        let core = self::core::Core::new(self::core::CoreParts {
            config: config.clone(),
            network,
            events: network_events,
            requests: core_requests,
            local_answers: local_rx,
            executor,
            health: health.clone(),
            metrics: metrics.clone(),
            task_log,
            copy_log,
            committed,
            ledger,
            reclaim: known_identity,
        });
        core.run(shutdown, DRAIN_TIMEOUT).await;
        stop_ledger.cancel();
        if let Some(task) = ledger_task {
            let _ = task.await;
        }

        stop_network.cancel();
        let _ = network_task.await;
        stop_servers.cancel();
        metrics.node_up.set(0);
        tasks.close();
        if tokio::time::timeout(SERVERS_GRACE, tasks.wait()).await.is_err() {
            tracing::warn!(left = tasks.len(), "tasks still running after shutdown; abandoning them");
        }
        tracing::info!("node stopped");
    }
}

/// Aborts the tasks when dropped, so that dropping a running node (a crash, in tests) takes
/// its network and servers down with it instead of leaving them orphaned.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
