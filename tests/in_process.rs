//! In-process swarms: several nodes on 127.0.0.1 (p2p port 0) inside one test process,
//! driven through their `NodeHandle`s, for protocol behaviour without process overhead.

mod inproc;

use std::time::{Duration, Instant};

use inproc::{Running, eventually};
use p2p_network::api::Submitted;
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
        let spec =
            TaskSpec { task_type: "echo".into(), payload: format!("after-{i}"), timeout_ms: None, max_attempts: None };
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
