//! Hostile peers against an in-process cluster. Each attacker is a real libp2p swarm on
//! 127.0.0.1 that speaks the cluster's protocols and identifies as one of its nodes, then
//! misbehaves: forged, unsigned, badly signed, malformed, misaddressed and oversized gossip;
//! garbage task requests, by request-response and on task lanes; garbage and lying task
//! answers. The node must keep all of it away
//! from the application, count it, graylist the gossip senders, and keep serving honest
//! peers.
//!
//! Gossip is sealed by its author (a libp2p signed envelope inside an anonymous GossipSub
//! message), so every bad message here is published through the GossipSub API: unsealed,
//! sealed with a broken signature, sealed around garbage, sealed by one peer about another.

mod inproc;

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use inproc::{Running, eventually};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, noise, ping, request_response, tcp, yamux,
};
use p2p_network::membership::MemberState;
use p2p_network::network::{ProtocolNames, gossip_config};
use p2p_network::node::Submitted;
use p2p_network::protocol::{
    CapabilityAdvertisement, GossipMessage, HeartBeat, TaskOutcome, TaskRequest, TaskResponse, WIRE_VERSION,
    seal_payload,
};
use p2p_network::scheduler::{TaskSpec, TaskState};
use tokio::sync::{mpsc, watch};

const PV: &str = "p2p-network";
const GRAYLIST: f64 = -80.0;

/// Writes requests and responses as given and reads whatever comes back: the codec of an
/// attacker, who wants to put exact bytes on a stream.
#[derive(Clone, Default)]
struct Raw;

async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    io.take(8 << 20).read_to_end(&mut v).await?;
    Ok(v)
}

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Hostile {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    /// Raw bytes on the task protocol: garbage requests out; garbage answers in `Garbage` mode.
    raw_task: request_response::Behaviour<Raw>,
    /// Well-formed task answers that lie about what they answer (`Liar` mode).
    tasks: request_response::cbor::Behaviour<TaskRequest, TaskResponse>,
    /// Raw bytes on a task lane (the attacker's side of one long-lived task stream).
    lane: libp2p_stream::Behaviour,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// Only sends what it is told to.
    Attacker,
    /// Advertises itself as a compute worker and answers every task with bytes that are no
    /// task response.
    Garbage,
    /// Advertises itself as a compute worker and answers with well-formed responses for
    /// another task, or for a later attempt than the one it was given.
    Liar,
}

enum Cmd {
    /// Publishes these bytes as they are (sealed or not) on the topic.
    Publish(&'static str, Vec<u8>),
    SendTask(Vec<u8>),
    /// Opens a task lane, writes these bytes, and replies with everything read back until
    /// the node closes the lane (or 10 s pass).
    Lane(Vec<u8>, tokio::sync::oneshot::Sender<Vec<u8>>),
}

struct HostileHandle {
    peer_id: PeerId,
    key: Keypair,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Set once the node's subscription to both topics has been seen.
    subscribed: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileHandle {
    fn send(&self, cmd: Cmd) {
        self.cmds.send(cmd).expect("hostile swarm runs");
    }
}

impl Drop for HostileHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn protocol(suffix: &str) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/{PV}/{suffix}")).unwrap()
}

fn topic(name: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("{PV}/{name}"))
}

fn hostile_swarm(mode: Mode, key: Keypair) -> Swarm<Hostile> {
    use request_response::ProtocolSupport;
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            // The cluster's own wire settings: an attacker speaks the protocol, then abuses it.
            let gs_config = gossip_config(&ProtocolNames::new(PV))
                .heartbeat_interval(Duration::from_millis(200))
                .max_transmit_size(256 * 1024)
                .build()
                .unwrap();
            let mut gossipsub =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gs_config).unwrap();
            gossipsub.subscribe(&topic("heartbeat")).unwrap();
            gossipsub.subscribe(&topic("capabilities")).unwrap();
            let rr = || request_response::Config::default().with_request_timeout(Duration::from_secs(5));
            let task_support = if mode == Mode::Garbage { ProtocolSupport::Full } else { ProtocolSupport::Outbound };
            let liar_protocols =
                if mode == Mode::Liar { vec![(protocol("task/1.0.0"), ProtocolSupport::Inbound)] } else { vec![] };
            Hostile {
                identify: identify::Behaviour::new(
                    identify::Config::new(PV.into(), key.public())
                        .with_agent_version("p2p-node/0.1.0 role=worker".into()),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(500))),
                gossipsub,
                raw_task: request_response::Behaviour::with_codec(Raw, [(protocol("task/1.0.0"), task_support)], rr()),
                tasks: request_response::cbor::Behaviour::new(liar_protocols, rr()),
                lane: libp2p_stream::Behaviour::new(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// Starts a hostile swarm that dials `node_addr` and runs until the handle is dropped.
fn hostile(mode: Mode, node_addr: &str) -> HostileHandle {
    let key = Keypair::generate_ed25519();
    let mut swarm = hostile_swarm(mode, key.clone());
    let peer_id = *swarm.local_peer_id();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr: Multiaddr = node_addr.parse().unwrap();
    swarm.dial(addr.clone()).unwrap();
    let node = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => id,
        _ => panic!("node address without /p2p: {addr}"),
    };
    let (cmds, mut rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = watch::channel(false);
    let lanes = swarm.behaviour().lane.new_control();
    let key_in_task = key.clone();
    let task = tokio::spawn(async move {
        let mut seen_topics = 0;
        let mut lies = 0u32;
        let mut advertise = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = advertise.tick(), if mode != Mode::Attacker => advertise_as_worker(&mut swarm, &key_in_task),
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Publish(name, data)) => {
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic(name), data);
                    }
                    Some(Cmd::SendTask(bytes)) => {
                        swarm.behaviour_mut().raw_task.send_request(&node, bytes);
                    }
                    Some(Cmd::Lane(bytes, reply)) => {
                        let mut control = lanes.clone();
                        tokio::spawn(async move {
                            // A connection of ours may be closing (the node dialed us too): retry.
                            let mut opened = Err(None);
                            for _ in 0..5 {
                                match control.open_stream(node, protocol("task-lane/1.0.0")).await {
                                    Ok(stream) => { opened = Ok(stream); break; }
                                    Err(e) => opened = Err(Some(e)),
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            let mut stream = opened.unwrap_or_else(|e| panic!("no lane opens: {e:?}"));
                            stream.write_all(&bytes).await.expect("lane takes the bytes");
                            stream.flush().await.expect("lane flushes");
                            let mut back = Vec::new();
                            let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back)).await;
                            let _ = reply.send(back);
                        });
                    }
                    None => return,
                },
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(HostileEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. }))
                        if peer_id == node =>
                    {
                        seen_topics += 1;
                        if seen_topics == 2 {
                            let _ = subscribed_tx.send(true);
                        }
                    }
                    SwarmEvent::Behaviour(HostileEvent::RawTask(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    })) => {
                        let _ = swarm.behaviour_mut().raw_task.send_response(channel, b"\xff\xfe\x00 not a task response".to_vec());
                    }
                    SwarmEvent::Behaviour(HostileEvent::Tasks(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    })) => {
                        // Alternate the two lies: another task's id, a later attempt's number.
                        lies += 1;
                        let (task_id, attempt) = if lies % 2 == 1 {
                            (format!("{}-forged", request.task_id), request.attempt)
                        } else {
                            (request.task_id.clone(), request.attempt + 1)
                        };
                        let response = TaskResponse {
                            v: WIRE_VERSION,
                            task_id,
                            attempt,
                            worker: peer_id.to_string(),
                            outcome: TaskOutcome::Ok("forged result".into()),
                            started_ms: None,
                            fuel_used: None,
                        };
                        let _ = swarm.behaviour_mut().tasks.send_response(channel, response);
                    }
                    _ => {}
                },
            }
        }
    });
    HostileHandle { peer_id, key, cmds, subscribed, task }
}

fn advertise_as_worker(swarm: &mut Swarm<Hostile>, key: &Keypair) {
    let me = swarm.local_peer_id().to_string();
    let addresses = swarm.listeners().map(|a| a.to_string()).collect();
    let seq = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let gs = &mut swarm.behaviour_mut().gossipsub;
    let hb = GossipMessage::HeartBeat(HeartBeat {
        v: WIRE_VERSION,
        node: me.clone(),
        incarnation: 1,
        state: MemberState::Alive,
        load: 0,
        seq,
        rumors: Vec::new(),
    });
    let ad = GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
        v: WIRE_VERSION,
        node: me,
        incarnation: 1,
        role: "worker".into(),
        capabilities: vec!["compute".into(), "storage".into()],
        capacity: 4,
        load: 0,
        addresses,
        seq,
    });
    let _ = gs.publish(topic("heartbeat"), hb.seal(key).unwrap());
    let _ = gs.publish(topic("capabilities"), ad.seal(key).unwrap());
}

fn evil_advert(node: &str, capability: &str) -> Vec<u8> {
    GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
        v: WIRE_VERSION,
        node: node.into(),
        incarnation: 99,
        role: "worker".into(),
        capabilities: vec![capability.into()],
        capacity: 100,
        load: 0,
        addresses: Vec::new(),
        seq: 1,
    })
    .encode()
}

async fn score_of(node: &Running, peer: &PeerId) -> Option<f64> {
    let id = peer.to_string();
    node.handle.peers().await.unwrap().into_iter().find(|p| p.peer_id == id).and_then(|p| p.gossip_score)
}

async fn capabilities_seen(node: &Running) -> Vec<String> {
    node.handle.capabilities().await.unwrap().cluster.keys().cloned().collect()
}

async fn run_echo(node: &Running, payload: &str, max_attempts: u32) -> p2p_network::scheduler::TaskRecord {
    let spec = TaskSpec {
        task_type: "echo".into(),
        payload: payload.into(),
        timeout_ms: Some(3000),
        max_attempts: Some(max_attempts),
        trace: None,
        replicas: None,
        quorum: None,
    };
    let Ok(Submitted::Final(rec)) =
        tokio::time::timeout(Duration::from_secs(30), node.handle.submit(spec, true)).await.expect("task ends")
    else {
        panic!("submit failed")
    };
    *rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gossip_never_reaches_the_application_and_graylists_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    let boot = inproc::start(dir.path(), "boot", "bootstrap", None, "").await;
    let addr = boot.tcp_addr().await;
    let w1 = inproc::start(dir.path(), "w1", "worker", Some(&addr), "").await;
    eventually(Duration::from_secs(15), "w1 schedulable at the bootstrap", async || {
        boot.handle.capabilities().await.unwrap().cluster.get("compute").is_some_and(|c| c.alive_workers == 1)
    })
    .await;

    // One attacker per kind of bad message, so each kind has to graylist on its own.
    let kinds = ["malformed", "sender_mismatch", "wrong_topic", "oversized", "unsigned", "bad_signature"];
    let attackers: Vec<HostileHandle> = kinds.iter().map(|_| hostile(Mode::Attacker, &addr)).collect();
    for (kind, h) in kinds.iter().zip(&attackers) {
        let mut subscribed = h.subscribed.clone();
        tokio::time::timeout(Duration::from_secs(15), subscribed.wait_for(|s| *s))
            .await
            .unwrap_or_else(|_| panic!("{kind} attacker never saw the node's subscriptions"))
            .unwrap();
        let id = h.peer_id.to_string();
        eventually(Duration::from_secs(10), "the attacker to be a member", async || {
            boot.handle.peers().await.unwrap().iter().any(|p| p.peer_id == id)
        })
        .await;
    }
    let accepted_before = boot.metric("p2p_gossip_validation_total{outcome=\"accept\"}").await;

    for (kind, h) in kinds.iter().zip(&attackers) {
        let me = h.peer_id.to_string();
        let sealed = |payload: Vec<u8>| seal_payload(&h.key, payload).unwrap();
        for i in 0..5usize {
            // Every message differs: GossipSub names a message by its bytes.
            let (topic, data) = match *kind {
                "malformed" => ("heartbeat", sealed(format!("{{\"type\":\"HeartBeat\",\"v\":1,{i}").into_bytes())),
                // Sealed by the attacker, claiming to be w1.
                "sender_mismatch" => ("capabilities", sealed(evil_advert(&w1.peer_id, &format!("evil-mismatch-{i}")))),
                // A well-formed advert on the heartbeat topic.
                "wrong_topic" => ("heartbeat", sealed(evil_advert(&me, &format!("evil-wrong-topic-{i}")))),
                "oversized" => {
                    let mut big = evil_advert(&me, "evil-oversized");
                    big.extend(std::iter::repeat_n(b' ', 20 * 1024 + i));
                    ("capabilities", sealed(big))
                }
                // A plain advert, in no envelope.
                "unsigned" => ("capabilities", evil_advert(&me, &format!("evil-unsigned-{i}"))),
                // Sealed, then one bit of its signature (the envelope's last field) flipped.
                "bad_signature" => {
                    let mut data = sealed(evil_advert(&me, &format!("evil-bad-signature-{i}")));
                    *data.last_mut().unwrap() ^= 1;
                    ("capabilities", data)
                }
                _ => unreachable!(),
            };
            h.send(Cmd::Publish(topic, data));
        }
    }

    for (kind, h) in kinds.iter().zip(&attackers) {
        eventually(Duration::from_secs(15), &format!("the {kind} sender to be graylisted"), async || {
            score_of(&boot, &h.peer_id).await.is_some_and(|s| s < GRAYLIST)
        })
        .await;
        eprintln!("{kind}: score {:?}", score_of(&boot, &h.peer_id).await);
    }
    eventually(Duration::from_secs(5), "the graylisted gauge to count all six", async || {
        boot.metric("p2p_gossip_graylisted_peers").await >= kinds.len() as f64
    })
    .await;
    for reason in [
        "gossip_malformed",
        "gossip_sender_mismatch",
        "gossip_wrong_topic",
        "gossip_oversized",
        "gossip_unsigned",
        "gossip_bad_signature",
    ] {
        let n = boot.metric(&format!("p2p_messages_dropped_total{{reason=\"{reason}\"}}")).await;
        assert!(n >= 1.0, "{reason} counted: {n}");
    }

    // Nothing of it reached the application: no forged capability, w1 still itself.
    let caps = capabilities_seen(&boot).await;
    assert!(caps.iter().all(|c| !c.starts_with("evil")), "forged capabilities reached the node: {caps:?}");
    let w1_view = boot.handle.peers().await.unwrap().into_iter().find(|p| p.peer_id == w1.peer_id).unwrap();
    assert_eq!(w1_view.state, "alive");
    assert!(!w1_view.capabilities.iter().any(|c| c.starts_with("evil")), "{w1_view:?}");

    // Honest traffic keeps flowing: w1's gossip is still accepted and it still runs tasks.
    eventually(Duration::from_secs(10), "honest gossip to be accepted after the attack", async || {
        boot.metric("p2p_gossip_validation_total{outcome=\"accept\"}").await > accepted_before + 2.0
    })
    .await;
    let score_w1 = score_of(&boot, &w1.peer_id.parse().unwrap()).await;
    assert!(score_w1.is_some_and(|s| s >= 0.0), "honest worker's score: {score_w1:?}");
    let rec = run_echo(&boot, "after the attack", 1).await;
    assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
    assert_eq!(rec.worker.as_deref(), Some(w1.peer_id.as_str()));

    drop(attackers);
    w1.stop().await;
    boot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_lying_task_traffic_is_counted_and_never_completes_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let boot = inproc::start(dir.path(), "boot", "bootstrap", None, "").await;
    let addr = boot.tcp_addr().await;

    // Garbage requests (not CBOR; over the size limit) at the node: rejected and counted.
    let garbage = hostile(Mode::Garbage, &addr);
    let id = garbage.peer_id.to_string();
    eventually(Duration::from_secs(15), "the garbage worker to be schedulable", async || {
        boot.handle.capabilities().await.unwrap().cluster.get("compute").is_some_and(|c| c.workers.contains(&id))
    })
    .await;
    garbage.send(Cmd::SendTask(b"\x00\x01 definitely not cbor".to_vec()));
    garbage.send(Cmd::SendTask(vec![0xa5; 2 * 1024 * 1024]));
    eventually(Duration::from_secs(10), "malformed task requests to be counted", async || {
        boot.metric("p2p_messages_dropped_total{reason=\"task_request_malformed\"}").await >= 2.0
    })
    .await;

    // The same on a task lane: an undecodable frame is dropped and the lane goes on (the
    // request after it is answered); a frame announced over the 1 MiB limit ends the lane.
    let malformed = boot.metric("p2p_messages_dropped_total{reason=\"task_request_malformed\"}").await;
    let request = TaskRequest {
        v: WIRE_VERSION,
        task_id: "on-a-lane".into(),
        attempt: 1,
        task_type: "echo".into(),
        payload: "hi".into(),
        required_capabilities: Vec::new(),
        deadline_ms: 1000,
        trace: None,
    };
    let mut bytes = Vec::new();
    for frame in
        [b"\x00\x01 definitely not cbor".to_vec(), p2p_network::network::lanes::encode(&request).unwrap().to_vec()]
    {
        bytes.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&frame);
    }
    bytes.extend_from_slice(&(2u32 << 20).to_be_bytes());
    let (reply, back) = tokio::sync::oneshot::channel();
    garbage.send(Cmd::Lane(bytes, reply));
    let back = back.await.unwrap();
    let answer = back.get(4..).map(p2p_network::network::lanes::decode::<TaskResponse>);
    let answer = answer.expect("one answer frame").expect("the answer decodes");
    assert_eq!((answer.task_id.as_str(), answer.attempt), ("on-a-lane", 1), "{answer:?}");
    assert_eq!(
        u32::from_be_bytes(back[..4].try_into().unwrap()) as usize,
        back.len() - 4,
        "one frame, then the node closed the lane"
    );
    let now = boot.metric("p2p_messages_dropped_total{reason=\"task_request_malformed\"}").await;
    assert_eq!(now - malformed, 2.0, "the undecodable frame and the oversized one are counted");

    // Its answers are no task responses: every attempt fails, the task ends failed, counted.
    let rec = run_echo(&boot, "to the garbage worker", 2).await;
    assert_eq!(rec.state, TaskState::Failed, "{rec:?}");
    assert!(boot.metric("p2p_messages_dropped_total{reason=\"task_response_malformed\"}").await >= 2.0);
    drop(garbage);

    // A liar answers well-formed responses for another task (first attempt) or for a later
    // attempt (second). Alone, it completes nothing: the task fails with both answers refused.
    let liar = hostile(Mode::Liar, &addr);
    let liar_id = liar.peer_id.to_string();
    eventually(Duration::from_secs(15), "the liar to be the only schedulable worker", async || {
        let peers = boot.handle.peers().await.unwrap();
        let alive = |id: &str| peers.iter().any(|p| p.peer_id == id && p.state == "alive");
        let liar_ready = peers.iter().any(|p| p.peer_id == liar_id && p.capabilities.iter().any(|c| c == "compute"));
        liar_ready && alive(&liar_id) && !alive(&id)
    })
    .await;
    let rec = run_echo(&boot, "to the liar", 2).await;
    assert_eq!(rec.state, TaskState::Failed, "{rec:?}");
    assert_eq!(rec.result, None, "{rec:?}");
    let lies = boot.metric("p2p_messages_dropped_total{reason=\"mismatched_task_result\"}").await;
    assert!(lies >= 2.0, "both lying answers refused: {lies}");

    // With an honest worker beside it, every task completes, and only on the honest worker.
    let w1 = inproc::start(dir.path(), "w1", "worker", Some(&addr), "").await;
    eventually(Duration::from_secs(15), "w1 to be schedulable", async || {
        boot.handle
            .capabilities()
            .await
            .unwrap()
            .cluster
            .get("compute")
            .is_some_and(|c| c.workers.contains(&w1.peer_id))
    })
    .await;
    for i in 0..12 {
        let rec = run_echo(&boot, &format!("task {i}"), 3).await;
        assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
        assert_eq!(rec.worker.as_deref(), Some(w1.peer_id.as_str()), "{rec:?}");
        assert_eq!(rec.result.as_deref(), Some(format!("task {i}").as_str()), "{rec:?}");
    }

    drop(liar);
    w1.stop().await;
    boot.stop().await;
}
