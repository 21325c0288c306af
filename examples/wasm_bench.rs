//! WebAssembly against native code, through the node's own engine (`p2p_network::wasm`:
//! [`WasmEngine::prepare`], [`WasmEngine::run_blocking`] under the shipped `wasm:` limits,
//! fuel and epoch deadline on, as a worker runs a task):
//!
//! ```sh
//! nice -n 10 cargo run --release --example wasm_bench -- [--reps 5] [--primes-n 10000000] \
//!     [--sha-mib 8] [--instances 16] [--json wasm-bench.json]
//! ```
//!
//! 1. CPU: `examples/wasm/primes.wasm` (a sieve up to `--primes-n`) and `sha256.wasm` (over
//!    `--sha-mib` MiB) against the same Rust source (`examples/wasm/src/shared/`) compiled
//!    into this program. Native and WebAssembly alternate (which goes first flips every
//!    repetition) and must give the same answer; the ratio is taken per repetition. A wasm
//!    time is the whole run: instantiation, input through stdin, the work, output. A third
//!    column, for diagnosis only, runs the same modules on a plain wasmtime engine (the same
//!    Cranelift settings, no fuel and no epoch checks): what the node's metering costs.
//! 2. Start-up: compiling `echo.wasm` on a fresh engine (what a worker pays the first time it
//!    sees a module, after fetching it), and one warm run of it on a small input.
//! 3. Memory per concurrent instance: `--instances` K runs at once (at most 64), VmRSS of
//!    this process sampled every millisecond from `/proc/self/status`: (peak - before) / K.
//!    Twice: `primes.wasm` with N = `--primes-n` (a real module; its sieve is N bytes), and
//!    the smallest instance (a WAT command touching its one 64 KiB page, then spinning
//!    until its 500 ms deadline). Each is run once before it is measured, so threads, code
//!    and allocator pools already exist.
//!
//! Bounded: every count is capped and every run has its deadline; the defaults take about
//! ten seconds on a 2-core machine. Prints a table (median and range over the repetitions).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use p2p_network::config::WasmConfig;
use p2p_network::wasm::engine::Prepared;
use p2p_network::wasm::{Limits, Outcome, WasmEngine};
use serde_json::{Value, json};

#[path = "wasm/src/shared/primes.rs"]
mod primes;
#[path = "wasm/src/shared/sha256.rs"]
mod sha256;

const PRIMES_WASM: &[u8] = include_bytes!("wasm/primes.wasm");
const SHA256_WASM: &[u8] = include_bytes!("wasm/sha256.wasm");
const ECHO_WASM: &[u8] = include_bytes!("wasm/echo.wasm");

/// The smallest command: touches its only page, then spins until its deadline stops it.
const SPIN_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (i32.store (i32.const 0) (i32.const 1)) (loop $l (br $l))))"#;
const SPIN_DEADLINE: Duration = Duration::from_millis(500);

const MAX_REPS: usize = 20;
const MAX_INSTANCES: usize = 64;
const MAX_PRIMES_N: usize = 100_000_000;
const MAX_SHA_MIB: usize = 64;
/// Warm echo runs timed per repetition.
const ECHO_RUNS: usize = 100;

#[derive(Debug, Parser)]
#[command(name = "wasm_bench", about = "WebAssembly runs against native code, and memory per instance")]
struct Args {
    /// Repetitions of the CPU and start-up comparisons (at most 20).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// The sieve's limit (at most 100,000,000).
    #[arg(long, default_value_t = 10_000_000)]
    primes_n: usize,
    /// MiB hashed by SHA-256 (at most 64).
    #[arg(long, default_value_t = 8)]
    sha_mib: usize,
    /// Instances run at once for the memory figure (at most 64).
    #[arg(long, default_value_t = 16)]
    instances: usize,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let reps = args.reps.clamp(1, MAX_REPS);
    let n = args.primes_n.min(MAX_PRIMES_N);
    let k = args.instances.clamp(1, MAX_INSTANCES);
    let limits = WasmConfig::default().limits();
    let engine = WasmEngine::new(8)?;
    let (_, primes_wasm) = engine.prepare(PRIMES_WASM, usize::MAX)?;
    let (_, sha_wasm) = engine.prepare(SHA256_WASM, usize::MAX)?;
    let (_, echo_wasm) = engine.prepare(ECHO_WASM, usize::MAX)?;
    // Deterministic, incompressible-looking input.
    let data: Arc<Vec<u8>> = Arc::new(
        (0..args.sha_mib.clamp(1, MAX_SHA_MIB) << 20)
            .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    );

    // What both must print (the native answer, computed once, outside the timings).
    let (count, largest) = primes::sieve(n);
    let primes_want = format!("{count} {largest}\n");
    let sha_want = format!("{}\n", hex::encode(sha256::sha256(&data)));

    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let (mut primes_native, mut primes_wasm_ms, mut sha_native, mut sha_wasm_ms) = (vec![], vec![], vec![], vec![]);
    let (mut compile_ms, mut echo_us) = (vec![], vec![]);
    let plain = Arc::new(Plain::new()?);
    let (plain_primes, plain_sha) = (plain.module(PRIMES_WASM)?, plain.module(SHA256_WASM)?);
    let (mut primes_plain_ms, mut sha_plain_ms) = (vec![], vec![]);
    for rep in 0..reps {
        let native_first = rep % 2 == 0;
        for wasm_turn in [!native_first, native_first] {
            if wasm_turn {
                let input = n.to_string().into_bytes();
                let (ms, out) = timed_wasm(&engine, &primes_wasm, input, limits).await?;
                check(&out, &primes_want, "primes")?;
                primes_wasm_ms.push(ms);
                let (ms, out) = timed_wasm(&engine, &sha_wasm, data.to_vec(), limits).await?;
                check(&out, &sha_want, "sha256")?;
                sha_wasm_ms.push(ms);
                let (ms, out) = Plain::run_blocking(&plain, &plain_primes, n.to_string().into_bytes()).await?;
                check(&out, &primes_want, "primes (plain)")?;
                primes_plain_ms.push(ms);
                let (ms, out) = Plain::run_blocking(&plain, &plain_sha, data.to_vec()).await?;
                check(&out, &sha_want, "sha256 (plain)")?;
                sha_plain_ms.push(ms);
            } else {
                primes_native.push(timed_native(move || format!("{:?}", primes::sieve(std::hint::black_box(n)))).await);
                let d = data.clone();
                sha_native.push(timed_native(move || hex::encode(sha256::sha256(std::hint::black_box(&d)))).await);
            }
        }
        // A fresh engine compiles echo.wasm from nothing, as a worker does on a cold start.
        let fresh = WasmEngine::new(1)?;
        let t0 = Instant::now();
        fresh.prepare(ECHO_WASM, usize::MAX)?;
        compile_ms.push(ms(t0.elapsed()));
        let mut runs = Vec::with_capacity(ECHO_RUNS);
        for i in 0..ECHO_RUNS {
            let (ms, out) = timed_wasm(&engine, &echo_wasm, format!("echo-{i}").into_bytes(), limits).await?;
            check(&out, &format!("echo-{i}"), "echo")?;
            runs.push(ms * 1000.0);
        }
        echo_us.push(median(&runs));
    }
    let ratio = |w: &[f64], nat: &[f64]| w.iter().zip(nat).map(|(a, b)| a / b).collect::<Vec<_>>();
    rows.push((format!("primes N={n}: native (ms)"), primes_native.clone()));
    rows.push((format!("primes N={n}: wasm (ms)"), primes_wasm_ms.clone()));
    rows.push(("primes: wasm / native".into(), ratio(&primes_wasm_ms, &primes_native)));
    rows.push(("primes: plain wasmtime / native".into(), ratio(&primes_plain_ms, &primes_native)));
    rows.push((format!("sha256 {} MiB: native (ms)", data.len() >> 20), sha_native.clone()));
    rows.push((format!("sha256 {} MiB: wasm (ms)", data.len() >> 20), sha_wasm_ms.clone()));
    rows.push(("sha256: wasm / native".into(), ratio(&sha_wasm_ms, &sha_native)));
    rows.push(("sha256: plain wasmtime / native".into(), ratio(&sha_plain_ms, &sha_native)));
    rows.push(("compile echo.wasm (ms)".into(), compile_ms));
    rows.push(("warm echo.wasm run (us)".into(), echo_us));

    let mut memory = Vec::new();
    let primes_input = n.to_string().into_bytes();
    let real = per_instance(&engine, &primes_wasm, &primes_input, limits, k).await?;
    memory.push((format!("primes.wasm N={n}"), real));
    let (_, spin) = engine.prepare(&wat::parse_str(SPIN_WAT)?, usize::MAX)?;
    let spin_limits = Limits { deadline: SPIN_DEADLINE, ..limits };
    let small = per_instance(&engine, &spin, b"", spin_limits, k).await?;
    memory.push(("smallest instance (1 page)".into(), small));

    println!("{:<34}{:>12}{:>24}", "metric", "median", format!("range ({reps} reps)"));
    for (name, v) in &rows {
        println!("{name:<34}{:>12.3}{:>24}", median(v), format!("{:.3}-{:.3}", min(v), max(v)));
    }
    println!("memory per concurrent instance ({k} at once; VmRSS growth / {k}; first: threads and pools new):");
    for (name, m) in &memory {
        println!(
            "  {name:<32}{:>10.0} KiB   (peak growth {:.1} MiB; first time {:.0} KiB per instance)",
            m.kib_per_instance,
            m.peak_growth_kib / 1024.0,
            m.first_kib_per_instance
        );
    }
    if let Some(path) = &args.json {
        let cpu: Value = rows
            .iter()
            .map(|(name, v)| (name.clone(), json!({"median": median(v), "min": min(v), "max": max(v), "values": v})))
            .collect::<serde_json::Map<_, _>>()
            .into();
        let mem: Value = memory
            .iter()
            .map(|(name, m)| {
                let v = json!({
                    "kib_per_instance": m.kib_per_instance,
                    "peak_growth_kib": m.peak_growth_kib,
                    "first_kib_per_instance": m.first_kib_per_instance,
                });
                (name.clone(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let report = json!({"reps": reps, "instances": k, "runs": cpu, "memory": mem});
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("JSON: {}", path.display());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One run through the engine, as a worker makes it; its milliseconds and stdout.
async fn timed_wasm(
    engine: &WasmEngine,
    module: &Prepared,
    input: Vec<u8>,
    limits: Limits,
) -> anyhow::Result<(f64, Vec<u8>)> {
    let t0 = Instant::now();
    let outcome = engine.run_blocking(module.clone(), input, Vec::new(), limits).await;
    let elapsed = ms(t0.elapsed());
    match outcome {
        Outcome::Completed { stdout, .. } => Ok((elapsed, stdout)),
        other => anyhow::bail!("the run ended as {}", other.describe()),
    }
}

/// The native function on a blocking thread, as the wasm runs are; its milliseconds.
async fn timed_native<F: FnOnce() -> String + Send + 'static>(f: F) -> f64 {
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        std::hint::black_box(f());
        ms(t0.elapsed())
    })
    .await
    .expect("the native run does not panic")
}

/// A wasmtime engine as the node's but without fuel or epoch interruption (diagnosis only:
/// what metering costs).
struct Plain {
    engine: wasmtime::Engine,
    linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx>,
}

impl Plain {
    fn new() -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_backtrace(false).cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&config)?;
        let mut linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
        Ok(Self { engine, linker })
    }

    fn module(&self, bytes: &[u8]) -> anyhow::Result<wasmtime::Module> {
        wasmtime::Module::new(&self.engine, bytes)
    }

    /// One run on a blocking thread (WASI's host calls must not run on the async runtime's).
    async fn run_blocking(
        this: &Arc<Self>,
        module: &wasmtime::Module,
        input: Vec<u8>,
    ) -> anyhow::Result<(f64, Vec<u8>)> {
        let (this, module) = (this.clone(), module.clone());
        tokio::task::spawn_blocking(move || this.run(&module, input)).await?
    }

    fn run(&self, module: &wasmtime::Module, input: Vec<u8>) -> anyhow::Result<(f64, Vec<u8>)> {
        use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
        let t0 = Instant::now();
        let stdout = MemoryOutputPipe::new(1 << 20);
        let wasi =
            wasmtime_wasi::WasiCtxBuilder::new().stdin(MemoryInputPipe::new(input)).stdout(stdout.clone()).build_p1();
        let mut store = wasmtime::Store::new(&self.engine, wasi);
        let instance = self.linker.instantiate(&mut store, module)?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some_and(|x| x.0 == 0) => {}
            Err(e) => return Err(e),
        }
        drop(store);
        Ok((ms(t0.elapsed()), stdout.contents().to_vec()))
    }
}

fn check(out: &[u8], want: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(out == want.as_bytes(), "{what}: wasm said {:?}, native {want:?}", String::from_utf8_lossy(out));
    Ok(())
}

/// What `k` instances at once added to this process's resident set.
struct Memory {
    /// The second time: threads, code and allocator pools already there.
    kib_per_instance: f64,
    peak_growth_kib: f64,
    /// The first time, with the blocking threads and allocator arenas made for it.
    first_kib_per_instance: f64,
}

/// `k` runs of `module` at once, twice; VmRSS peak over its value before, each time.
async fn per_instance(
    engine: &WasmEngine,
    module: &Prepared,
    input: &[u8],
    limits: Limits,
    k: usize,
) -> anyhow::Result<Memory> {
    let mut growth = [0.0; 2];
    for slot in &mut growth {
        let before = vm_rss_kib()?;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(vm_rss_kib().unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(1));
                }
                peak
            })
        };
        let runs = (0..k).map(|_| engine.run_blocking(module.clone(), input.to_vec(), Vec::new(), limits));
        let outcomes = futures::future::join_all(runs).await;
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.join().map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
        for o in outcomes {
            anyhow::ensure!(
                matches!(o, Outcome::Completed { .. } | Outcome::DeadlineExceeded),
                "an instance ended as {}",
                o.describe()
            );
        }
        *slot = peak.saturating_sub(before) as f64;
    }
    Ok(Memory {
        kib_per_instance: growth[1] / k as f64,
        peak_growth_kib: growth[1],
        first_kib_per_instance: growth[0] / k as f64,
    })
}

/// This process's resident set, in KiB.
fn vm_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
