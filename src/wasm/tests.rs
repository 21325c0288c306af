//! The runtime's limits and outcomes, upload validation, the module store's eviction, and
//! the fetch protocol's checks, on modules written in WAT here.

use std::sync::Arc;
use std::time::Duration;

use super::fetch::{self, FetchError};
use super::*;

const MIB: usize = 1024 * 1024;

fn limits() -> Limits {
    Limits { fuel: 10_000_000, deadline: Duration::from_secs(10), memory_bytes: 16 * MIB, output_bytes: 1024 }
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test WAT parses")
}

/// Copies stdin to stdout, 4 KiB at a time.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 16) (i32.const 1024))
          (i32.store (i32.const 20) (local.get $n))
          (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
          (br $again))))))"#;

fn run(engine: &WasmEngine, wat: &str, input: &[u8], limits: Limits) -> Outcome {
    let (_, module) = engine.prepare(&wasm(wat), usize::MAX).expect("test module is valid");
    engine.run(&module, input, &[], limits)
}

#[test]
fn a_command_completes_with_its_stdout_and_deterministic_fuel() {
    let engine = WasmEngine::new(4).unwrap();
    let first = run(&engine, ECHO, b"hello, wasm", limits());
    let Outcome::Completed { stdout, fuel_used } = &first else { panic!("{first:?}") };
    assert_eq!(stdout, b"hello, wasm");
    assert!(*fuel_used > 0);
    assert_eq!(run(&engine, ECHO, b"hello, wasm", limits()), first, "same input, same fuel");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let engine = WasmEngine::new(4).unwrap();
    let wat = r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;
    assert_eq!(run(&engine, wat, b"", limits()), Outcome::OutOfFuel { limit: 10_000_000 });
}

#[test]
fn a_wall_clock_deadline_interrupts_a_run_fuel_would_allow() {
    let engine = WasmEngine::new(4).unwrap();
    let wat = r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;
    let started = std::time::Instant::now();
    let generous = Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(50), ..limits() };
    assert_eq!(run(&engine, wat, b"", generous), Outcome::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn memory_past_the_limit_is_out_of_memory() {
    let engine = WasmEngine::new(4).unwrap();
    // Grows by 64 MiB, and traps when refused (as an allocator's abort does).
    let bomb = r#"(module (memory (export "memory") 1)
      (func (export "_start")
        (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))))"#;
    assert_eq!(run(&engine, bomb, b"", limits()), Outcome::OutOfMemory { limit: 16 * MIB });
    // Asks for 32 MiB up front: refused at instantiation.
    let big = r#"(module (memory (export "memory") 512) (func (export "_start")))"#;
    assert_eq!(run(&engine, big, b"", limits()), Outcome::OutOfMemory { limit: 16 * MIB });
    // Within the limit, the same growth is fine.
    let roomy = Limits { memory_bytes: 128 * MIB, ..limits() };
    assert!(matches!(run(&engine, bomb, b"", roomy), Outcome::Completed { .. }));
}

#[test]
fn output_past_the_limit_is_output_too_large() {
    let engine = WasmEngine::new(4).unwrap();
    let input = vec![b'x'; 4000];
    let small = Limits { output_bytes: 1000, ..limits() };
    assert_eq!(run(&engine, ECHO, &input, small), Outcome::OutputTooLarge { limit: 1000 });
    let exact = Limits { output_bytes: 4000, ..limits() };
    assert!(matches!(run(&engine, ECHO, &input, exact), Outcome::Completed { .. }));
}

#[test]
fn a_trap_says_what_happened_and_an_exit_status_is_kept() {
    let engine = WasmEngine::new(4).unwrap();
    let trap = r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;
    let outcome = run(&engine, trap, b"", limits());
    let Outcome::Trapped(message) = &outcome else { panic!("{outcome:?}") };
    assert!(message.contains("unreachable"), "{message}");
    let exit = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 3))))"#;
    assert_eq!(run(&engine, exit, b"", limits()), Outcome::Exited { code: 3, stderr: String::new() });
    assert!(outcome.is_deterministic() && !Outcome::DeadlineExceeded.is_deterministic());
}

#[test]
fn the_guest_sees_no_time_and_cannot_sleep() {
    let engine = WasmEngine::new(4).unwrap();
    // clock_time_get(realtime) into 0; poll_oneoff's errno into 8; both written to stdout.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $now (i32.const 0) (i64.const 1) (i32.const 0)))
        (i32.store (i32.const 8) (call $poll (i32.const 100) (i32.const 200) (i32.const 1) (i32.const 300)))
        (i32.store (i32.const 16) (i32.const 0))
        (i32.store (i32.const 20) (i32.const 12))
        (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;
    let outcome = run(&engine, wat, b"", limits());
    let Outcome::Completed { stdout, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(&stdout[..8], &[0u8; 8], "the clock reads zero");
    assert_eq!(u32::from_le_bytes(stdout[8..12].try_into().unwrap()), 52, "poll_oneoff answers ENOSYS");
}

#[test]
fn uploads_that_are_not_wasi_commands_are_refused_with_the_reason() {
    let engine = WasmEngine::new(4).unwrap();
    let refuse = |bytes: &[u8], max: usize| engine.prepare(bytes, max).err().expect("refused");
    assert!(matches!(refuse(b"#!/bin/sh\necho hi", MIB), InvalidModule::NotWasm(_)));
    assert!(matches!(refuse(b"\0asm\x01\0\0\0garbage", MIB), InvalidModule::NotWasm(_)));
    assert_eq!(refuse(&wasm(ECHO), 100), InvalidModule::TooLarge { size: wasm(ECHO).len(), max: 100 });
    let library = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
    assert_eq!(refuse(&wasm(library), MIB), InvalidModule::NotCommand);
    let foreign = r#"(module (import "env" "launch_missiles" (func)) (memory (export "memory") 1)
      (func (export "_start")))"#;
    assert_eq!(
        refuse(&wasm(foreign), MIB),
        InvalidModule::ForeignImport { module: "env".into(), name: "launch_missiles".into() }
    );
    let unknown = r#"(module (import "wasi_snapshot_preview1" "sock_open_everything" (func))
      (memory (export "memory") 1) (func (export "_start")))"#;
    let err = refuse(&wasm(unknown), MIB);
    assert!(matches!(&err, InvalidModule::UnknownImport(m) if m.contains("sock_open_everything")), "{err}");
}

#[test]
fn compiled_modules_are_cached_per_id_with_a_bound() {
    let engine = WasmEngine::new(2).unwrap();
    let modules: Vec<_> = (0..3)
        .map(|i| {
            wasm(&format!(
                r#"(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const {i})))"#
            ))
        })
        .collect();
    let ids: Vec<_> = modules.iter().map(|m| engine.prepare(m, MIB).unwrap().0).collect();
    assert_eq!(ids[0], ModuleId::of(&modules[0]));
    assert!(engine.cached(&ids[0]).is_none(), "the least recently used was dropped");
    assert!(engine.cached(&ids[1]).is_some() && engine.cached(&ids[2]).is_some());
}

#[test]
fn module_ids_parse_strictly() {
    let id = ModuleId::of(b"x");
    assert_eq!(id.to_string().parse::<ModuleId>().unwrap(), id);
    for bad in ["", "sha256:", "md5:00", &format!("sha256:{}", "g".repeat(64)), &id.hex()] {
        assert!(bad.parse::<ModuleId>().is_err(), "{bad:?}");
    }
    assert!(WasmCall::decode(r#"{"module": "sha256:00", "input": ""}"#).is_err());
    let call = WasmCall { module: id, input: "in".into(), args: vec!["-n".into()], limits: Default::default() };
    assert_eq!(WasmCall::decode(&call.encode()).unwrap(), call);
}

#[test]
fn the_store_evicts_the_least_recently_used_and_drops_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModuleStore::open(dir.path(), 250).unwrap();
    let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
    let ids: Vec<_> = blobs.iter().map(|b| ModuleId::of(b)).collect();
    store.put(&ids[0], &blobs[0]).unwrap();
    store.put(&ids[1], &blobs[1]).unwrap();
    assert_eq!(store.get(&ids[0]).unwrap(), blobs[0], "a read makes 0 the most recent");
    store.put(&ids[2], &blobs[2]).unwrap();
    assert_eq!(store.size(&ids[1]), None, "1 was the least recently used");
    assert!(store.size(&ids[0]).is_some() && store.size(&ids[2]).is_some());
    assert_eq!(store.total_bytes(), 200);
    // A damaged file reads as absent and leaves the store.
    std::fs::write(dir.path().join(format!("{}.wasm", ids[2].hex())), b"tampered").unwrap();
    assert_eq!(store.get(&ids[2]), None);
    assert_eq!(store.size(&ids[2]), None);
    // What is on disk is found again after a restart.
    drop(store);
    let again = ModuleStore::open(dir.path(), 250).unwrap();
    assert_eq!(again.get(&ids[0]).unwrap(), blobs[0]);
}

#[tokio::test]
async fn fetches_are_hash_checked_and_bounded() {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ModuleStore::open(dir.path(), u64::MAX).unwrap());
    // Larger than a chunk, so it takes several requests.
    let module: Vec<u8> = (0..(fetch::CHUNK_BYTES * 2 + 7)).map(|i| (i % 251) as u8).collect();
    let id = ModuleId::of(&module);
    store.put(&id, &module).unwrap();
    let peer = libp2p::PeerId::random();
    let fetch_from = |id: ModuleId, max: u64| {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fetch::answer(server.compat(), store.clone()));
        fetch::fetch_over(client.compat(), peer, id, max)
    };
    assert_eq!(fetch_from(id, u64::MAX).await.unwrap(), module);
    assert_eq!(fetch_from(id, 1000).await, Err(FetchError::TooLarge { size: module.len() as u64, max: 1000 }));
    assert_eq!(fetch_from(ModuleId::of(b"nobody has this"), u64::MAX).await, Err(FetchError::NotFound(peer)));
    // A node serving other bytes under the id: caught by the hash.
    let lie = ModuleId::of(b"what was asked for");
    store.put(&lie, b"something else entirely").unwrap();
    assert_eq!(fetch_from(lie, u64::MAX).await, Err(FetchError::HashMismatch));
}
