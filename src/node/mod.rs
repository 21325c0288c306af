//! Starting and stopping a node: identity, metrics registry, network, worker, core, HTTP
//! servers. `run` takes the shutdown signal as a future so tests can drive it.

mod core;
mod health;
mod views;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use self::health::Health;
pub use self::views::{
    CapabilitiesView, ClusterCapability, LocalCapabilities, MemberCounts, PeerView, Request, StatusView, TaskCounts,
};
use crate::api::NodeHandle;
use crate::config::Config;
use crate::metrics::Metrics;

/// Longest time a leaving node waits for its running tasks.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of the API-to-core request channel.
const REQUEST_CHANNEL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Network(#[from] crate::network::BuildError),
    #[error("api.listen {addr}: cannot bind: {source}")]
    ApiBind { addr: String, source: std::io::Error },
    #[error("metrics.listen {addr}: cannot bind: {source}")]
    MetricsBind { addr: String, source: std::io::Error },
}

/// A node that has bound its sockets and is ready to run.
pub struct Node {
    config: Arc<Config>,
    setup: crate::network::NetworkSetup,
    core_requests: mpsc::Receiver<Request>,
    handle: NodeHandle,
    api_listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    registry: prometheus_client::registry::Registry,
    metrics: Metrics,
    health: Arc<Health>,
}

impl Node {
    /// Loads the identity and binds every socket, so all start-up errors surface here.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let (keypair, created) = crate::identity::load_or_create(&config.node.identity_file)?;
        let peer_id = keypair.public().to_peer_id();
        tracing::info!(%peer_id, role = %config.node.role, identity = %config.node.identity_file.display(),
            created, "starting node");
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry);
        let api_listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| StartError::ApiBind { addr: config.api.listen.to_string(), source })?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
            .await
            .map_err(|source| StartError::MetricsBind { addr: config.metrics.listen.to_string(), source })?;
        let setup = crate::network::build(&config, keypair, &mut registry, metrics.clone())?;
        let (tx, core_requests) = mpsc::channel(REQUEST_CHANNEL);
        let health = Arc::new(Health::default());
        health.touch();
        let handle = NodeHandle::new(tx, health.clone());
        Ok(Self {
            config: Arc::new(config),
            setup,
            core_requests,
            handle,
            api_listener,
            metrics_listener,
            registry,
            metrics,
            health,
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
        self.setup.client.local_peer_id()
    }

    /// Runs until `shutdown` resolves, then leaves the cluster in an orderly way.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let Node { config, setup, core_requests, handle, api_listener, metrics_listener, registry, metrics, health } =
            self;
        let crate::network::NetworkSetup { client, event_loop, events } = setup;

        let (stop_network, network_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut network_task = AbortOnDrop(tokio::spawn(event_loop.run(async {
            let _ = network_stopped.await;
        })));

        let (local_tx, local_rx) = mpsc::channel(crate::network::COMMAND_CHANNEL);
        let executor = (config.node.role == crate::config::Role::Worker)
            .then(|| crate::worker::Executor::new(client.clone(), &config, metrics.clone(), local_tx));

        let (stop_servers_tx, stop_servers) = tokio::sync::watch::channel(false);
        let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut api_task =
            AbortOnDrop(tokio::spawn(crate::api::serve(api_listener, handle, wait_stop(stop_servers.clone()))));
        let mut metrics_task = AbortOnDrop(tokio::spawn(crate::metrics::serve(
            metrics_listener,
            Arc::new(registry),
            metrics.clone(),
            wait_stop(stop_servers.clone()),
        )));

        let core = self::core::Core::new(self::core::CoreParts {
            config: config.clone(),
            network: client,
            events,
            requests: core_requests,
            local_answers: local_rx,
            executor,
            health: health.clone(),
            metrics: metrics.clone(),
        });
        core.run(shutdown, DRAIN_TIMEOUT).await;

        let _ = stop_network.send(());
        let _ = (&mut network_task.0).await;
        let _ = stop_servers_tx.send(true);
        metrics.node_up.set(0);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = (&mut api_task.0).await;
            let _ = (&mut metrics_task.0).await;
        })
        .await;
        tracing::info!("node stopped");
    }
}

/// Aborts the task when dropped, so that dropping a running node (a crash, in tests) takes
/// its network and servers down with it instead of leaving them orphaned.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
