//! In-process swarms: several nodes on 127.0.0.1 (p2p port 0) inside one test process,
//! driven through their `NodeHandle`s, for protocol behaviour without process overhead.

mod inproc;

use std::time::{Duration, Instant};

use inproc::{Running, eventually};
use p2p_network::node::Submitted;
use p2p_network::scheduler::{TaskSpec, TaskState};

async fn start(dir: &std::path::Path, name: &str, role: &str, bootstrap: Option<&str>) -> Running {
    inproc::start(dir, name, role, bootstrap, "").await
}

async fn alive(node: &Running) -> Vec<String> {
    node.alive().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_one_process_form_a_cluster_and_run_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(dir.path(), "boot", "bootstrap", None).await;
    let addr = boot.tcp_addr().await;
    let w1 = start(dir.path(), "w1", "worker", Some(&addr)).await;
    let w2 = start(dir.path(), "w2", "worker", Some(&addr)).await;

    eventually(Duration::from_secs(10), "full membership", async || {
        let (a, b, c) = (alive(&boot).await, alive(&w1).await, alive(&w2).await);
        a.len() == 2 && b.len() == 2 && c.len() == 2
    })
    .await;
    eventually(Duration::from_secs(10), "both workers schedulable at the bootstrap", async || {
        boot.handle.capabilities().await.unwrap().cluster.get("compute").is_some_and(|c| c.alive_workers == 2)
    })
    .await;

    // Tasks from the non-worker bootstrap run on the workers; results come back verified.
    let mut workers_used = std::collections::HashSet::new();
    for i in 0..20 {
        let spec = TaskSpec {
            task_type: "compute".into(),
            payload: format!("in-process-{i}"),
            timeout_ms: None,
            max_attempts: None,
            trace: None,
            replicas: None,
            quorum: None,
        };
        let Ok(Submitted::Final(rec)) = boot.handle.submit(spec, true).await else { panic!("submit failed") };
        assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
        workers_used.insert(rec.worker.clone().unwrap());
    }
    assert!(workers_used.len() == 2, "both workers took tasks: {workers_used:?}");

    // A worker that leaves in an orderly way is `left` for the others, and no longer placed.
    let w2_id = w2.peer_id.clone();
    w2.stop().await;
    eventually(Duration::from_secs(5), "w2 to be seen as left", async || {
        boot.handle.peers().await.unwrap().iter().any(|p| p.peer_id == w2_id && p.state == "left")
    })
    .await;
    for i in 0..5 {
        let spec = TaskSpec {
            task_type: "echo".into(),
            payload: format!("after-{i}"),
            timeout_ms: None,
            max_attempts: None,
            trace: None,
            replicas: None,
            quorum: None,
        };
        let Ok(Submitted::Final(rec)) = boot.handle.submit(spec, true).await else { panic!("submit failed") };
        assert_eq!(rec.state, TaskState::Completed);
        assert_eq!(rec.worker.as_deref(), Some(w1.peer_id.as_str()));
    }
    w1.stop().await;
    boot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_is_suspected_then_declared_dead() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(dir.path(), "boot", "bootstrap", None).await;
    let addr = boot.tcp_addr().await;
    let w1 = start(dir.path(), "w1", "worker", Some(&addr)).await;
    eventually(Duration::from_secs(10), "w1 alive at the bootstrap", async || alive(&boot).await.len() == 1).await;

    // Abort the node's task: its sockets close without a goodbye, like a crash.
    let id = w1.peer_id.clone();
    w1.task.abort();
    let t0 = Instant::now();
    eventually(Duration::from_secs(10), "w1 to be declared dead", async || {
        boot.handle.peers().await.unwrap().iter().any(|p| p.peer_id == id && p.state == "dead")
    })
    .await;
    eprintln!("crashed peer declared dead after {:?}", t0.elapsed());
    boot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_decide_who_submits_and_who_executes() {
    let dir = tempfile::tempdir().unwrap();
    // Identities first, so that the lists can name them.
    let id = |name: &str| {
        let (key, _) = p2p_network::identity::load_or_create(&dir.path().join(format!("{name}.key"))).unwrap();
        key.public().to_peer_id().to_string()
    };
    let (w1_id, w2_id) = (id("w1"), id("w2"));
    let stranger = libp2p::PeerId::random();
    // gw gives tasks only to w1; gw2 only to w2; w2 takes tasks only from a stranger.
    let only = |key: &str, peer: &str| format!("security:\n  {key}: [\"{peer}\"]\n");
    let gw = inproc::start(dir.path(), "gw", "bootstrap", None, &only("allowed_workers", &w1_id)).await;
    let addr = gw.tcp_addr().await;
    let gw2 = inproc::start(dir.path(), "gw2", "bootstrap", Some(&addr), &only("allowed_workers", &w2_id)).await;
    let w1 = start(dir.path(), "w1", "worker", Some(&addr)).await;
    let w2 = inproc::start(dir.path(), "w2", "worker", Some(&addr), &only("allowed_submitters", &stranger.to_string()))
        .await;
    for node in [&gw, &gw2] {
        eventually(Duration::from_secs(10), "both workers known at both gateways", async || {
            node.handle.capabilities().await.unwrap().cluster.get("compute").is_some_and(|c| c.workers.len() == 2)
        })
        .await;
    }
    let echo = |payload: String| TaskSpec {
        task_type: "echo".into(),
        payload,
        timeout_ms: None,
        max_attempts: Some(2),
        trace: None,
        replicas: None,
        quorum: None,
    };

    // Only the allowed worker executes the gateway's tasks.
    for i in 0..10 {
        let Ok(Submitted::Final(rec)) = gw.handle.submit(echo(format!("allowed-{i}")), true).await else {
            panic!("submit failed")
        };
        assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
        assert_eq!(rec.worker.as_deref(), Some(w1_id.as_str()), "only the allowed worker executes");
    }
    // A worker refuses a submitter that is not on its list, and says why.
    let Ok(Submitted::Final(rec)) = gw2.handle.submit(echo("refused".into()), true).await else {
        panic!("submit failed")
    };
    assert_eq!(rec.state, TaskState::Failed, "{rec:?}");
    assert!(rec.error.as_deref().is_some_and(|e| e.contains("allowed_submitters")), "{rec:?}");
    assert!(w2.metric("p2p_messages_dropped_total{reason=\"task_submitter_not_allowed\"}").await >= 2.0);
    assert_eq!(w2.metric("p2p_tasks_executed_total").await, 0.0, "w2 executed nothing");

    for node in [w2, w1, gw2, gw] {
        node.stop().await;
    }
}

/// A cluster larger than its active view (`network.active_peers` 3, 9 members): each worker
/// closes the idle connections to workers outside its view, stays connected to those inside
/// it, nobody takes the closes for failures, and the bootstrap still reaches every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_larger_than_its_active_view_keeps_only_the_view_connected() {
    use libp2p::PeerId;
    use p2p_network::network::view;

    const ACTIVE: usize = 3;
    const WORKERS: usize = 8;
    let env = || vec![("P2P_NETWORK__ACTIVE_PEERS".to_string(), ACTIVE.to_string())];
    let dir = tempfile::tempdir().unwrap();
    let boot = inproc::start_with_env(dir.path(), "boot", "bootstrap", None, "", env()).await;
    let addr = boot.tcp_addr().await;
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(inproc::start_with_env(dir.path(), &format!("w{i}"), "worker", Some(&addr), "", env()).await);
    }
    let members = WORKERS + 1;
    let everyone: Vec<&Running> = std::iter::once(&boot).chain(&workers).collect();
    eventually(Duration::from_secs(30), "all alive everywhere", async || {
        for n in &everyone {
            if alive(n).await.len() != members - 1 {
                return false;
            }
        }
        true
    })
    .await;

    let ids: Vec<PeerId> = workers.iter().map(|w| w.peer_id.parse().unwrap()).collect();
    let in_view = |a: usize, b: usize, margin: f64| view::keeps(&ids[a], &ids[b], members, ACTIVE, margin);
    // Connections between workers, seen from each worker.
    let links = async || {
        let mut links = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            for p in w.handle.peers().await.unwrap() {
                if let Some(j) = ids.iter().position(|id| id.to_string() == p.peer_id)
                    && p.connection != "none"
                {
                    links.push((i, j));
                }
            }
        }
        links
    };
    // Trimmed once idle for 10 s; the kept pairs are (re)dialed within a second or two.
    eventually(Duration::from_secs(40), "only the active view connected", async || {
        let links = links().await;
        let outside = links.iter().all(|&(i, j)| in_view(i, j, view::TRIM_MARGIN));
        let kept = (0..WORKERS)
            .flat_map(|i| (0..WORKERS).map(move |j| (i, j)))
            .filter(|&(i, j)| i != j && in_view(i, j, 1.0))
            .all(|pair| links.contains(&pair));
        outside && kept
    })
    .await;
    let mut trimmed = 0.0;
    for w in &workers {
        trimmed += w.metric("p2p_connections_trimmed_total").await;
    }
    assert!(trimmed > 0.0, "discovery dialed every worker before the cluster outgrew the view");
    for n in &everyone {
        let peers = n.handle.peers().await.unwrap();
        assert!(peers.iter().all(|p| p.state == "alive"), "a close outside the view taken for a failure: {peers:?}");
    }

    let mut used = std::collections::HashSet::new();
    for i in 0..40 {
        let spec = TaskSpec {
            task_type: "echo".into(),
            payload: format!("view-{i}"),
            timeout_ms: None,
            max_attempts: None,
            trace: None,
            replicas: None,
            quorum: None,
        };
        let Ok(Submitted::Final(rec)) = boot.handle.submit(spec, true).await else { panic!("submit failed") };
        assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
        used.insert(rec.worker.unwrap());
    }
    assert!(used.len() >= WORKERS / 2, "tasks spread over the workers: {used:?}");
    for n in workers {
        n.stop().await;
    }
    boot.stop().await;
}

/// A node joining a cluster larger than its active view asks a neighbour for every member's
/// heartbeat and advertisement (`network/catch_up.rs`) and lists every member alive and
/// every worker schedulable at once (heartbeats and refreshes come once an hour here). At 9
/// members the joiner's discovery also reaches every worker, so this checks the wiring end
/// to end (the pull happened, the view is whole); the difference the pull makes shows at 100
/// nodes, where the joiner connects to a fifth of them (`examples/scale`, "the joiner's own
/// view").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_pulls_every_member_and_worker_from_a_neighbour() {
    const ACTIVE: usize = 3;
    const WORKERS: usize = 8;
    let env = || {
        vec![
            ("P2P_NETWORK__ACTIVE_PEERS".to_string(), ACTIVE.to_string()),
            ("P2P_NODE__HEARTBEAT_INTERVAL".to_string(), "3600".to_string()),
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let boot = inproc::start_with_env(dir.path(), "boot", "bootstrap", None, "", env()).await;
    let addr = boot.tcp_addr().await;
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(inproc::start_with_env(dir.path(), &format!("w{i}"), "worker", Some(&addr), "", env()).await);
    }
    let ids: Vec<String> = workers.iter().map(|w| w.peer_id.clone()).collect();
    eventually(Duration::from_secs(30), "every worker schedulable at the bootstrap", async || {
        let caps = boot.handle.capabilities().await.unwrap();
        caps.cluster.get("compute").is_some_and(|c| ids.iter().all(|id| c.workers.contains(id)))
    })
    .await;

    let joiner = inproc::start_with_env(dir.path(), "joiner", "worker", Some(&addr), "", env()).await;
    eventually(Duration::from_secs(10), "every member alive and every worker schedulable at the joiner", async || {
        let caps = joiner.handle.capabilities().await.unwrap();
        let listed = caps.cluster.get("compute").is_some_and(|c| ids.iter().all(|id| c.workers.contains(id)));
        listed && joiner.alive().await.len() == WORKERS + 1
    })
    .await;
    let pulls = joiner.metric("p2p_membership_pulls_total{outcome=\"pulled\"}").await;
    assert!(pulls >= 1.0, "the joiner pulled from a neighbour: {pulls} pulls");
    for n in workers.into_iter().chain([joiner, boot]) {
        n.stop().await;
    }
}
