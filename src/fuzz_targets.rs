//! Entry points for fuzzing every decoder of untrusted input: the task and probe codecs and
//! what the worker and gateway parse out of them, gossip messages, and the configuration
//! parser. `fuzz/` drives them with cargo-fuzz (`./fuzz.sh`); a unit test replays the
//! committed corpus through them on every `./test.sh`, so a finding stays fixed.
//!
//! Each function must not panic, whatever the input. Where decoding succeeds it also checks
//! the decoder's own promises: bounds hold, and what was decoded encodes and decodes back to
//! the same value.

use std::sync::OnceLock;

use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::network::codec::Counted;
use crate::protocol::{
    DecodeError, GossipMessage, MAX_GOSSIP_BYTES, MAX_PROBE_BYTES, MAX_RUMORS, MAX_TASK_REQUEST_BYTES,
    MAX_TASK_RESPONSE_BYTES, ProbeRequest, ProbeResponse, TaskOutcome, TaskRequest, TaskResponse,
};
use crate::tasks::{StorageOp, TaskKind};

fn metrics() -> Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new(&mut prometheus_client::registry::Registry::default())).clone()
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new("/fuzz/1.0.0")
}

/// A task request as a worker reads it off a stream, then what the worker parses from it.
pub fn task_request(data: &[u8]) {
    let mut codec =
        Counted::<TaskRequest, TaskResponse>::tasks(MAX_TASK_REQUEST_BYTES, MAX_TASK_RESPONSE_BYTES, metrics());
    let Ok(request) = block_on(codec.read_request(&protocol(), &mut Cursor::new(data))) else { return };
    let mut out = Cursor::new(Vec::new());
    block_on(codec.write_request(&protocol(), &mut out, request.clone())).expect("a decoded request encodes");
    let again = block_on(codec.read_request(&protocol(), &mut Cursor::new(out.into_inner())));
    assert_eq!(again.expect("a re-encoded request decodes"), request);
    if let Some(kind) = TaskKind::parse(&request.task_type) {
        let _ = kind.validate_payload(&request.payload);
    }
    let _ = StorageOp::parse(&request.payload);
    let _ = crate::tasks::parse_sleep(&request.payload);
}

/// A task response as a gateway reads it, then the compute proof check it runs on results.
pub fn task_response(data: &[u8]) {
    let mut codec =
        Counted::<TaskRequest, TaskResponse>::tasks(MAX_TASK_REQUEST_BYTES, MAX_TASK_RESPONSE_BYTES, metrics());
    let Ok(response) = block_on(codec.read_response(&protocol(), &mut Cursor::new(data))) else { return };
    let mut out = Cursor::new(Vec::new());
    block_on(codec.write_response(&protocol(), &mut out, response.clone())).expect("a decoded response encodes");
    let again = block_on(codec.read_response(&protocol(), &mut Cursor::new(out.into_inner())));
    assert_eq!(again.expect("a re-encoded response decodes"), response);
    if let TaskOutcome::Ok(result) = &response.outcome {
        let _ = crate::tasks::verify(response.task_id.as_bytes(), result, 0);
    }
}

/// A task lane's bytes as a worker reads them (frames of task requests), and the same bytes
/// as a gateway reads them (frames of answers): frames stay within their limit, an
/// undecodable one is skipped, a decoded message re-encodes to itself.
pub fn task_lane(data: &[u8]) {
    use tokio_util::codec::Decoder;

    use crate::network::lanes::{decode, encode, frame_codec};

    fn frames<T>(data: &[u8], max: u64)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut codec = frame_codec(max);
        let mut buf = tokio_util::bytes::BytesMut::from(data);
        // Frames until the input ends mid-frame or a length over the limit ends the lane.
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            assert!(frame.len() as u64 <= max);
            let Ok(message) = decode::<T>(&frame) else { continue };
            let again = encode(&message).expect("a decoded message encodes");
            assert_eq!(decode::<T>(&again).expect("a re-encoded message decodes"), message);
        }
    }
    frames::<TaskRequest>(data, MAX_TASK_REQUEST_BYTES);
    frames::<TaskResponse>(data, MAX_TASK_RESPONSE_BYTES);
}

/// A SWIM probe request and response (both directions share one size limit).
pub fn probe(data: &[u8]) {
    let mut codec = Counted::<ProbeRequest, ProbeResponse>::probes(MAX_PROBE_BYTES, MAX_PROBE_BYTES, metrics());
    let _ = block_on(codec.read_request(&protocol(), &mut Cursor::new(data)));
    let _ = block_on(codec.read_response(&protocol(), &mut Cursor::new(data)));
}

/// A gossip message (heartbeat or capability advertisement) as the validator opens it (a
/// signed envelope), and its payload as the validator decodes it.
pub fn gossip(data: &[u8]) {
    if let Ok((_, message)) = GossipMessage::open(data) {
        assert!(data.len() <= MAX_GOSSIP_BYTES + crate::protocol::MAX_ENVELOPE_OVERHEAD);
        decoded_gossip(&message);
    }
    let Ok(message) = GossipMessage::decode(data) else { return };
    assert!(data.len() <= MAX_GOSSIP_BYTES);
    decoded_gossip(&message);
}

/// What holds of every gossip message that decoded: in bounds, and it re-encodes to itself.
fn decoded_gossip(message: &GossipMessage) {
    if let GossipMessage::HeartBeat(h) = message {
        assert!(h.rumors.len() <= MAX_RUMORS);
    }
    match GossipMessage::decode(&message.encode()) {
        Ok(again) => assert_eq!(&again, message),
        // Escapes may re-encode longer than they arrived; the limit then applies again.
        Err(DecodeError::TooLarge(_)) => {}
        Err(e) => panic!("a decoded message must re-encode to a valid one: {e}"),
    }
}

/// The configuration parser: YAML, then after a NUL byte `SECTION__KEY=value` lines applied
/// as `P2P_SECTION__KEY` environment overrides. Every error must name where it came from.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> =
        env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (format!("P2P_{k}"), v.to_string())).collect();
    match Config::from_yaml_str(yaml, "fuzz.yaml", env) {
        Ok(config) => {
            assert!(config.node.max_connections >= 1);
            assert!(config.tasks.max_attempts >= 1);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("fuzz.yaml: ") || message.starts_with("environment variable P2P_"),
                "an error that names neither the file nor the variable: {message}"
            );
        }
    }
}

/// A fuzz target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("task_request", task_request),
    ("task_response", task_response),
    ("task_lane", task_lane),
    ("probe", probe),
    ("gossip", gossip),
    ("config", config),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seed inputs the corpus started from (one well-formed input per message
    /// shape). Run once by hand: `cargo test --lib write_seed_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        use crate::membership::MemberState;
        use crate::protocol::{CapabilityAdvertisement, HeartBeat, TaskError, WIRE_VERSION, WireRumor};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        };
        let mut codec =
            Counted::<TaskRequest, TaskResponse>::tasks(MAX_TASK_REQUEST_BYTES, MAX_TASK_RESPONSE_BYTES, metrics());
        for (task_type, payload) in
            [("echo", "hi"), ("compute", "data"), ("storage", "put k v"), ("storage", "get k"), ("sleep", "10")]
        {
            let request = TaskRequest {
                v: WIRE_VERSION,
                task_id: "t1".into(),
                attempt: 1,
                task_type: task_type.into(),
                payload: payload.into(),
                required_capabilities: vec!["compute".into()],
                deadline_ms: 1000,
                trace: None,
            };
            let mut out = Cursor::new(Vec::new());
            block_on(codec.write_request(&protocol(), &mut out, request)).unwrap();
            write("task_request", &format!("{task_type}-{}", payload.len()), &out.into_inner());
        }
        let proof = r#"{"nonce":1,"hash":"00ab","difficulty":4}"#;
        for (name, outcome) in [
            ("ok", TaskOutcome::Ok(proof.into())),
            ("busy", TaskOutcome::Err(TaskError::Busy)),
            ("failed", TaskOutcome::Err(TaskError::Failed("boom".into()))),
        ] {
            let response = TaskResponse {
                v: WIRE_VERSION,
                task_id: "t1".into(),
                attempt: 1,
                worker: "w".into(),
                outcome,
                started_ms: None,
                fuel_used: None,
            };
            let mut out = Cursor::new(Vec::new());
            block_on(codec.write_response(&protocol(), &mut out, response)).unwrap();
            write("task_response", name, &out.into_inner());
        }
        // A lane's bytes: length-prefixed frames, here two requests and an answer.
        let mut lane = Vec::new();
        for frame in [
            crate::network::lanes::encode(&TaskRequest {
                v: WIRE_VERSION,
                task_id: "t1".into(),
                attempt: 1,
                task_type: "echo".into(),
                payload: "hi".into(),
                required_capabilities: Vec::new(),
                deadline_ms: 1000,
                trace: None,
            })
            .unwrap(),
            crate::network::lanes::encode(&TaskResponse {
                v: WIRE_VERSION,
                task_id: "t1".into(),
                attempt: 1,
                worker: "w".into(),
                outcome: TaskOutcome::Ok("hi".into()),
                started_ms: None,
                fuel_used: None,
            })
            .unwrap(),
        ] {
            lane.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
            lane.extend_from_slice(&frame);
        }
        write("task_lane", "frames", &lane);
        let mut probes = Counted::<ProbeRequest, ProbeResponse>::probes(MAX_PROBE_BYTES, MAX_PROBE_BYTES, metrics());
        let mut out = Cursor::new(Vec::new());
        block_on(probes.write_request(&protocol(), &mut out, ProbeRequest { v: WIRE_VERSION, target: "p".into() }))
            .unwrap();
        write("probe", "request", &out.into_inner());
        let mut out = Cursor::new(Vec::new());
        let answer = ProbeResponse::new("p".into(), crate::membership::Reach::Reachable);
        block_on(probes.write_response(&protocol(), &mut out, answer)).unwrap();
        write("probe", "response", &out.into_inner());
        let heartbeat = GossipMessage::HeartBeat(HeartBeat {
            v: WIRE_VERSION,
            node: "n".into(),
            incarnation: 3,
            state: MemberState::Alive,
            load: 1,
            seq: 1,
            rumors: vec![WireRumor { peer: "q".into(), state: MemberState::Suspect, incarnation: 2 }],
        });
        // A fixed key, so that the seeds do not change from run to run.
        let key = libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        write("gossip", "heartbeat", &heartbeat.encode());
        write("gossip", "heartbeat-sealed", &heartbeat.seal(&key).unwrap());
        let advert = GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
            v: WIRE_VERSION,
            node: "n".into(),
            incarnation: 3,
            role: "worker".into(),
            capabilities: vec!["compute".into()],
            capacity: 4,
            load: 0,
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            seq: 2,
        });
        write("gossip", "advert", &advert.encode());
        write("gossip", "advert-sealed", &advert.seal(&key).unwrap());
        let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for entry in std::fs::read_dir(configs).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                write("config", &name, &std::fs::read(&path).unwrap());
            }
        }
        write(
            "config",
            "env",
            b"node:\n  role: relay\n\0NODE__LISTEN_PORT=4100\nNETWORK__BOOTSTRAP_PEERS=/ip4/10.0.0.1/tcp/4001\n",
        );
    }

    /// Replays `fuzz/corpus/<target>/*` (minimised, committed) through every target.
    #[test]
    fn committed_fuzz_corpus_replays_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed >= TARGETS.len(), "the corpus has inputs for every target ({replayed} files)");
    }
}
