//! The network's event loop on libp2p's memory transport: real security, multiplexing,
//! behaviours and event loop, no sockets. Each test drives nodes only through their `Client`
//! and reads only their `NetworkEvent`s (and, where the network reports nothing, their
//! metrics); every wait is bounded.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2p_network::config::Config;
use p2p_network::membership::{MemberState, Reach};
use p2p_network::metrics::{DialCause, Metrics, ReasonLabels};
use p2p_network::network::{self, Client, DispatchError, InboundId, NetworkEvent, PutOutcome};
use p2p_network::protocol::{
    GossipMessage, HeartBeat, TaskError, TaskOutcome, TaskRequest, TaskResponse, WIRE_VERSION,
};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest any one expected event may take; on one machine they take milliseconds
/// (gossip a few GossipSub heartbeats of 700 ms).
const LIMIT: Duration = Duration::from_secs(10);

/// One node's network, running on its own task.
struct Node {
    client: Client,
    events: mpsc::Receiver<NetworkEvent>,
    peer: PeerId,
    /// Where it listens: `/memory/<n>`.
    addr: Multiaddr,
    metrics: Metrics,
    /// Its metrics, libp2p's included.
    registry: Registry,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Node {
    async fn start(role: &str, extra: &str) -> Node {
        Node::start_with(Keypair::generate_ed25519(), role, "p2p-network", extra).await
    }

    /// A node of `role` with `keypair` in the cluster named `protocol_version`; `extra` is
    /// YAML appended to the config (whole sections other than `node` and `network`).
    async fn start_with(keypair: Keypair, role: &str, protocol_version: &str, extra: &str) -> Node {
        // RUST_LOG=... shows the nodes' logs (captured per test unless --nocapture).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let yaml = format!(
            "node:\n  role: {role}\n  listen_address: 127.0.0.1\n  listen_port: 0\n  capabilities: [compute]\n  \
             identity_file: unused.key\nnetwork:\n  enable_mdns: false\n  enable_quic: false\n  \
             protocol_version: {protocol_version}\n{extra}"
        );
        let config = Config::from_yaml_str(&yaml, "swarm-test", Vec::new()).expect("a valid config");
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (client, events, event_loop) =
            network::new_in_memory(&config, keypair, &mut registry, metrics.clone(), TaskTracker::new())
                .expect("the network builds");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(event_loop.run(shutdown.clone()));
        let peer = client.local_peer_id();
        let mut node = Node { client, events, peer, addr: Multiaddr::empty(), metrics, registry, shutdown, task };
        node.addr = node
            .next("its listen address", |e| match e {
                NetworkEvent::Listening(addr) => Some(addr),
                _ => None,
            })
            .await;
        assert!(node.addr.to_string().starts_with("/memory/"), "listens in memory, not on {}", node.addr);
        node
    }

    /// The first event `pick` takes, skipping the others; fails the test after `LIMIT`.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(NetworkEvent) -> Option<T>) -> T {
        let events = &mut self.events;
        let wait = async {
            loop {
                let event = events.recv().await.expect("the event loop is running");
                if let Some(found) = pick(event) {
                    return found;
                }
            }
        };
        timeout(LIMIT, wait).await.unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
    }

    /// Every event up to a marker: a dial this node is asked to make to nobody, which fails
    /// and is reported after everything the node emitted before.
    async fn events_so_far(&mut self, nobody: u64) -> Vec<NetworkEvent> {
        let ghost = PeerId::random();
        self.client.dial(ghost, vec![memory(nobody)], DialCause::Ping).await.unwrap();
        let mut seen = Vec::new();
        self.next("the marker dial's failure", |e| match e {
            NetworkEvent::DialFailed { peer } if peer == ghost => Some(()),
            other => {
                seen.push(other);
                None
            }
        })
        .await;
        seen
    }

    fn rejected_as_foreign(&self) -> u64 {
        self.metrics.peers_rejected.get_or_create(&ReasonLabels { reason: "protocol_version".into() }).get()
    }

    /// Sum of every sample of the node's metrics whose name and labels start with `prefix`.
    fn metric(&self, prefix: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("metrics encode");
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// Connections that were open and have closed.
    fn connections_closed(&self) -> f64 {
        self.metric("libp2p_swarm_connections_duration_seconds_count")
    }

    /// Stops the event loop the way a node does (farewell flush, orderly close).
    async fn stop(self) {
        self.shutdown.cancel();
        timeout(LIMIT, self.task).await.expect("the event loop stops").unwrap();
    }
}

/// A memory address nobody listens on: listeners take random 64-bit ports, never these.
fn memory(port: u64) -> Multiaddr {
    format!("/memory/{port}").parse().unwrap()
}

/// `a` dials `b`; returns once both have heard of the other as a member.
async fn connect(a: &mut Node, b: &mut Node) {
    a.client.dial(b.peer, vec![b.addr.clone()], DialCause::Ping).await.unwrap();
    let (a_peer, b_peer) = (a.peer, b.peer);
    a.next("PeerConnected for b at a", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer, .. } if peer == b_peer).then_some(())
    })
    .await;
    b.next("PeerConnected for a at b", |e| {
        matches!(e, NetworkEvent::PeerConnected { peer, .. } if peer == a_peer).then_some(())
    })
    .await;
}

fn task(id: &str) -> TaskRequest {
    TaskRequest {
        v: WIRE_VERSION,
        task_id: id.into(),
        attempt: 1,
        task_type: "echo".into(),
        payload: format!("payload of {id}"),
        required_capabilities: vec!["compute".into()],
        deadline_ms: 5_000,
        trace: None,
    }
}

fn answer(worker: &Node, request: &TaskRequest) -> TaskResponse {
    TaskResponse {
        v: WIRE_VERSION,
        task_id: request.task_id.clone(),
        attempt: request.attempt,
        worker: worker.peer.to_string(),
        outcome: TaskOutcome::Ok(format!("done: {}", request.payload)),
        started_ms: None,
        fuel_used: None,
    }
}

/// The next task request `node` hears, with the peer that sent it.
async fn task_requested(node: &mut Node) -> (InboundId, PeerId, TaskRequest) {
    node.next("TaskRequested", |e| match e {
        NetworkEvent::TaskRequested { id, peer, request } => Some((id, peer, request)),
        _ => None,
    })
    .await
}

/// The answer `node` hears for attempt 1 of `task_id`, with the peer it came from.
async fn task_answered(node: &mut Node, task_id: &str) -> (PeerId, Result<TaskResponse, DispatchError>) {
    node.next("TaskAnswered", |e| match e {
        NetworkEvent::TaskAnswered { peer, task_id: id, attempt: 1, result } if id == task_id => Some((peer, result)),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_connect_each_hear_of_the_other_with_its_role_and_address() {
    let mut worker = Node::start("worker", "").await;
    let mut boot = Node::start("bootstrap", "").await;
    worker.client.dial(boot.peer, vec![boot.addr.clone()], DialCause::Records).await.unwrap();
    let boot_peer = boot.peer;
    let (role, address) = worker
        .next("PeerConnected for the bootstrap", |e| match e {
            NetworkEvent::PeerConnected { peer, role, address, relayed: false } if peer == boot_peer => {
                Some((role, address))
            }
            _ => None,
        })
        .await;
    assert_eq!(role.as_deref(), Some("bootstrap"));
    assert_eq!(address, boot.addr, "the address it listens on, as Identify told");
    let worker_peer = worker.peer;
    let role = boot
        .next("PeerConnected for the worker", |e| match e {
            NetworkEvent::PeerConnected { peer, role, relayed: false, .. } if peer == worker_peer => Some(role),
            _ => None,
        })
        .await;
    assert_eq!(role.as_deref(), Some("worker"));
    // The dial is counted under the cause it was asked with, and only by the node that dialed.
    assert_eq!(worker.metric("p2p_dials_total{reason=\"records\"}"), 1.0);
    assert_eq!(worker.metric("p2p_dials_total"), 1.0);
    assert_eq!(boot.metric("p2p_dials_total"), 0.0);
    let status = worker.client.status().await.unwrap();
    assert_eq!(status.connected_peers, 1);
    assert_eq!(status.listen_addresses, vec![worker.addr.clone()]);
    worker.stop().await;
    boot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_goes_out_on_a_lane_and_its_answer_comes_back() {
    let mut gateway = Node::start("bootstrap", "").await;
    let mut worker = Node::start("worker", "").await;
    connect(&mut gateway, &mut worker).await;

    // Three in flight on one lane, answered in reverse: each answer finds its own task.
    let requests: Vec<TaskRequest> = (1..=3).map(|i| task(&format!("t{i}"))).collect();
    for request in &requests {
        gateway.client.send_task(worker.peer, vec![], request.clone()).await.unwrap();
    }
    let mut held = Vec::new();
    for _ in &requests {
        let (id, from, request) = task_requested(&mut worker).await;
        assert_eq!(from, gateway.peer);
        held.push((id, request));
    }
    assert_eq!(held.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), requests, "in the order sent");
    for (id, request) in held.iter().rev() {
        worker.client.respond_task(*id, answer(&worker, request)).await.unwrap();
    }
    for request in requests.iter().rev() {
        let (from, result) = task_answered(&mut gateway, &request.task_id).await;
        assert_eq!(from, worker.peer);
        assert_eq!(result, Ok(answer(&worker, request)));
    }
    gateway.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_a_peer_not_yet_connected_dials_the_address_given_and_is_served() {
    let mut gateway = Node::start("bootstrap", "").await;
    let mut worker = Node::start("worker", "").await;
    // The lane opens as soon as the dial connects, which may be before the worker's Identify
    // has told it the gateway is of its cluster: then it answers busy (an answer, so the
    // gateway retries), never drops or runs the task.
    let request = task("dialed");
    let mut tries = 0;
    let (id, request) = loop {
        tries += 1;
        assert!(tries <= 20, "still busy after {tries} tries");
        gateway.client.send_task(worker.peer, vec![worker.addr.clone()], request.clone()).await.unwrap();
        let worker_peer = worker.peer;
        let answered = tokio::select! {
            (id, _, request) = task_requested(&mut worker) => Err((id, request)),
            (from, result) = task_answered(&mut gateway, "dialed") => Ok((from, result)),
        };
        match answered {
            Err(held) => break held,
            Ok((from, Ok(TaskResponse { outcome: TaskOutcome::Err(TaskError::Busy), .. }))) => {
                assert_eq!(from, worker_peer);
            }
            Ok(other) => panic!("neither served nor busy: {other:?}"),
        }
    };
    worker.client.respond_task(id, answer(&worker, &request)).await.unwrap();
    let (_, result) = task_answered(&mut gateway, "dialed").await;
    assert_eq!(result, Ok(answer(&worker, &request)));
    assert_eq!(gateway.metric("p2p_dials_total{reason=\"task\"}"), 1.0, "one dial, for the task");
    gateway.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_a_peer_that_is_not_there_is_unreachable() {
    let mut gateway = Node::start("bootstrap", "").await;
    let ghost = PeerId::random();

    gateway.client.send_task(ghost, vec![memory(1_000_001)], task("nobody listens")).await.unwrap();
    let (peer, result) = task_answered(&mut gateway, "nobody listens").await;
    assert_eq!(peer, ghost);
    assert_eq!(result, Err(DispatchError::Unreachable("dial failed: none of 1 address(es) answered".into())));

    gateway.client.send_task(ghost, vec![], task("no address")).await.unwrap();
    let (_, result) = task_answered(&mut gateway, "no address").await;
    assert_eq!(result, Err(DispatchError::Unreachable("dial failed: no known address".into())));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_tasks_from_a_peer_outside_its_allowed_submitters() {
    let (allowed, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let only = format!("security:\n  allowed_submitters: [\"{}\"]\n", allowed.public().to_peer_id());
    let mut worker = Node::start("worker", &only).await;
    let mut stranger = Node::start_with(other, "bootstrap", "p2p-network", "").await;
    connect(&mut stranger, &mut worker).await;

    stranger.client.send_task(worker.peer, vec![], task("refused")).await.unwrap();
    let (_, result) = task_answered(&mut stranger, "refused").await;
    let response = result.expect("an answer, not a failure to deliver");
    assert_eq!(response.outcome, TaskOutcome::Err(TaskError::NotAllowed));
    let seen = worker.events_so_far(1_000_002).await;
    assert!(
        !seen.iter().any(|e| matches!(e, NetworkEvent::TaskRequested { .. })),
        "never reached the worker: {seen:?}"
    );
    stranger.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indirect_probes_are_carried_to_the_application_and_answered() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    let (a_peer, b_peer) = (a.peer, b.peer);

    // Each answer arrives as it was given: a helper whose ping timed out says so, and is not
    // read as one whose ping failed.
    for reach in [Reach::Unreachable, Reach::Reachable, Reach::Unknown] {
        let target = PeerId::random();
        a.client.send_probe(b_peer, target).await.unwrap();
        let (id, target_asked) = b
            .next("ProbeRequested", |e| match e {
                NetworkEvent::ProbeRequested { id, peer, request } if peer == a_peer => Some((id, request.target)),
                _ => None,
            })
            .await;
        assert_eq!(target_asked, target.to_string());
        b.client.respond_probe(id, target, reach).await.unwrap();
        let answered = a
            .next("ProbeAnswered", |e| match e {
                NetworkEvent::ProbeAnswered { via, target: t, reach, .. } if via == b_peer && t == target => {
                    Some(reach)
                }
                _ => None,
            })
            .await;
        assert_eq!(answered, reach, "probe about {target}");
    }
    // A helper that cannot be asked (here: gone) says nothing about the member, for or against.
    let target = PeerId::random();
    b.stop().await;
    a.client.send_probe(b_peer, target).await.unwrap();
    let answered = a
        .next("ProbeAnswered", |e| match e {
            NetworkEvent::ProbeAnswered { via, target: t, reach, .. } if via == b_peer && t == target => Some(reach),
            _ => None,
        })
        .await;
    assert_eq!(answered, Reach::Unknown);
    a.stop().await;
}

/// A direct ping asks only whether the node is up: its network answers it at once, so a node
/// whose application is busy (here: never reads its events) is not taken for dead. Once it
/// leaves, its pings say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_about_us_is_answered_while_the_application_is_stalled() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    let b_peer = b.peer;
    for expected in [true, false] {
        if !expected {
            b.client.leaving().await.unwrap();
        }
        a.client.send_probe(b_peer, b_peer).await.unwrap();
        let answered = a
            .next("ProbeAnswered", |e| match e {
                NetworkEvent::ProbeAnswered { via, target, reach, .. } if via == b_peer && target == b_peer => {
                    Some(reach == Reach::Reachable)
                }
                _ => None,
            })
            .await;
        assert_eq!(answered, expected);
    }
    // b's application was never asked.
    let seen = b.events_so_far(1_000_001).await;
    assert!(!seen.iter().any(|e| matches!(e, NetworkEvent::ProbeRequested { .. })), "{seen:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_disconnected_and_never_reported() {
    let mut ours = Node::start_with(Keypair::generate_ed25519(), "worker", "ours", "").await;
    let mut theirs = Node::start_with(Keypair::generate_ed25519(), "worker", "theirs", "").await;

    ours.client.dial(theirs.peer, vec![theirs.addr.clone()], DialCause::Ping).await.unwrap();
    // Whichever hears the other's Identify first closes the connection; the other may hear
    // it too, or see only the close.
    let refused_and_closed = || {
        ours.rejected_as_foreign() + theirs.rejected_as_foreign() >= 1
            && ours.connections_closed() >= 1.0
            && theirs.connections_closed() >= 1.0
    };
    timeout(LIMIT, async {
        while !refused_and_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("refused at Identify and the connection closed at both ends");

    for (node, nobody) in [(&mut ours, 1_000_003), (&mut theirs, 1_000_004)] {
        let seen = node.events_so_far(nobody).await;
        let reported = seen.iter().any(|e| {
            matches!(
                e,
                NetworkEvent::PeerConnected { .. }
                    | NetworkEvent::PeerDisconnected { .. }
                    | NetworkEvent::Subscribed { .. }
            )
        });
        assert!(!reported, "a foreign peer never reaches the application: {seen:?}");
        assert_eq!(node.client.status().await.unwrap().connected_peers, 0);
    }
    ours.stop().await;
    theirs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_published_by_one_node_reaches_the_other() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;

    // Until b's subscription reaches a, a publication finds no one and is dropped; publish
    // a fresh heartbeat (a new message id) every 200 ms until one arrives.
    let heartbeat = |seq| HeartBeat {
        v: WIRE_VERSION,
        node: a.peer.to_string(),
        incarnation: 1,
        state: MemberState::Alive,
        load: 0,
        seq,
        rumors: Vec::new(),
    };
    let a_peer = a.peer;
    let mut publish = tokio::time::interval(Duration::from_millis(200));
    let mut seq = 0;
    let received = timeout(LIMIT, async {
        loop {
            tokio::select! {
                _ = publish.tick() => {
                    seq += 1;
                    a.client.publish(GossipMessage::HeartBeat(heartbeat(seq))).await.unwrap();
                }
                event = b.events.recv() => match event.expect("the event loop is running") {
                    NetworkEvent::HeartBeat { from, message } if from == a_peer => return message,
                    _ => {}
                },
            }
        }
    })
    .await
    .expect("a heartbeat from a at b");
    assert_eq!(received, heartbeat(received.seq), "delivered as published");
    assert!(received.seq >= 1 && received.seq <= seq);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_put_by_one_node_is_stored_by_the_other() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    a.next("b in the routing table", |e| matches!(e, NetworkEvent::RoutingTable { size: 1 }).then_some(())).await;

    let stored = timeout(LIMIT, a.client.put_record(b"key".to_vec(), b"value".to_vec(), 1)).await.expect("put ends");
    assert_eq!(stored, Ok(PutOutcome { stored: 1, wanted: 1 }), "b stored it");
    let got = timeout(LIMIT, b.client.get_record(b"key".to_vec())).await.expect("get ends");
    assert_eq!(got, Ok(Some(b"value".to_vec())));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_only_some_peers_stored_is_reported_as_partial() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    let mut c = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    connect(&mut a, &mut c).await;
    a.next("b and c in the routing table", |e| matches!(e, NetworkEvent::RoutingTable { size: 2 }).then_some(())).await;
    // c goes away but stays in a's routing table: only b can store the value.
    c.stop().await;

    let stored = timeout(LIMIT, a.client.put_record(b"key".to_vec(), b"value".to_vec(), 2)).await.expect("put ends");
    assert_eq!(stored, Ok(PutOutcome { stored: 1, wanted: 2 }));
    assert!(stored.unwrap().is_partial());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_we_disconnect_is_reported_gone_without_failure() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    let (a_peer, b_peer) = (a.peer, b.peer);

    a.client.disconnect(b_peer).await.unwrap();
    let failure = a
        .next("PeerDisconnected for b", |e| match e {
            NetworkEvent::PeerDisconnected { peer, failure } if peer == b_peer => Some(failure),
            _ => None,
        })
        .await;
    assert!(!failure, "a close we asked for is no failure");
    b.next("PeerDisconnected for a", |e| {
        matches!(e, NetworkEvent::PeerDisconnected { peer, .. } if peer == a_peer).then_some(())
    })
    .await;
    assert_eq!(a.client.status().await.unwrap().connected_peers, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_event_loop_dies_is_reported_gone_as_a_failure() {
    let mut a = Node::start("worker", "").await;
    let mut b = Node::start("worker", "").await;
    connect(&mut a, &mut b).await;
    let b_peer = b.peer;

    // Dropping the swarm mid-flight closes its connections without a goodbye, like a crash.
    b.task.abort();
    let failure = a
        .next("PeerDisconnected for b", |e| match e {
            NetworkEvent::PeerDisconnected { peer, failure } if peer == b_peer => Some(failure),
            _ => None,
        })
        .await;
    assert!(failure, "an unexpected close of a member's connection is a failure");
    a.stop().await;
}
