//! The runtime: one wasmtime engine per node (Cranelift, fuel, epoch interruption), the
//! WASI preview 1 linker, a cache of modules ready to instantiate, and one run of a module.
//!
//! Why wasmtime: a Bytecode Alliance project made for running untrusted code, with exactly
//! the controls a task needs (deterministic fuel, epoch deadlines, a resource limiter) and
//! WASI preview 1, which `wasm32-wasip1` toolchains target.
//!
//! What a guest gets: stdin (the task's input), stdout and stderr (bounded in-memory pipes),
//! its arguments and environment, and nothing else: no preopened directories, no sockets,
//! clocks that always read zero, a fixed random stream and no sleeping (`poll_oneoff` answers
//! ENOSYS), so a run depends only on its module, input, arguments and limits.
//!
//! Runs are synchronous and CPU-bound: callers put them on a blocking thread
//! ([`WasmEngine::run_blocking`]), never on the async runtime's threads.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::ModuleId;
use super::limits::{Limits, MemoryLimiter};
use super::outcome::Outcome;
use super::validate::{self, InvalidModule};

/// How often the epoch advances: the granularity of wall-clock deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The tail of stderr kept for an error message.
const STDERR_BYTES: usize = 4096;
/// WASI's `nosys` errno: what `poll_oneoff` answers (no sleeping in a deterministic sandbox).
const ERRNO_NOSYS: i32 = 52;
/// Name of the module as the guest sees it in `argv[0]`.
const ARGV0: &str = "module.wasm";

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("wasm engine: {0}")]
pub struct EngineError(String);

/// What the guest's store holds: its WASI context and its memory limiter.
pub struct Guest {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// A module compiled and linked, ready to instantiate (cheap to clone).
pub type Prepared = InstancePre<Guest>;

/// Cache key: the module and the engine settings it was compiled with (a cached module is
/// only valid for the engine configuration that compiled it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    module: ModuleId,
    settings: u64,
}

/// Compiled modules, least recently used out first once `capacity` are held.
struct Compiled {
    entries: HashMap<CacheKey, (Prepared, u64)>,
    clock: u64,
    capacity: usize,
}

impl Compiled {
    fn get(&mut self, key: &CacheKey) -> Option<Prepared> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(pre, used)| {
            *used = clock;
            pre.clone()
        })
    }

    fn insert(&mut self, key: CacheKey, pre: Prepared) {
        self.clock += 1;
        if !self.entries.contains_key(&key)
            && self.entries.len() >= self.capacity
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, (pre, self.clock));
    }
}

/// The node's WebAssembly engine. Cloning shares it.
#[derive(Clone)]
pub struct WasmEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Guest>,
    settings: u64,
    compiled: Mutex<Compiled>,
}

impl WasmEngine {
    /// An engine keeping up to `compiled_capacity` compiled modules, with a thread that
    /// advances its epoch (it stops once the engine is dropped).
    pub fn new(compiled_capacity: usize) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            // Traps say what happened, not where: messages stay short and identical across
            // workers (replicas compare them).
            .wasm_backtrace(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| EngineError(e.to_string()))?;
        let mut linker: Linker<Guest> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |guest: &mut Guest| &mut guest.wasi)
            .map_err(|e| EngineError(e.to_string()))?;
        linker.allow_shadowing(true);
        linker
            .func_wrap(validate::WASI_MODULE, "poll_oneoff", |_: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_NOSYS })
            .map_err(|e| EngineError(e.to_string()))?;
        linker.allow_shadowing(false);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let settings = hasher.finish();
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| EngineError(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                settings,
                compiled: Mutex::new(Compiled {
                    entries: HashMap::new(),
                    clock: 0,
                    capacity: compiled_capacity.max(1),
                }),
            }),
        })
    }

    fn key(&self, module: ModuleId) -> CacheKey {
        CacheKey { module, settings: self.inner.settings }
    }

    /// The compiled module, if this engine has it.
    pub fn cached(&self, id: &ModuleId) -> Option<Prepared> {
        self.inner.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(&self.key(*id))
    }

    /// Checks `bytes` as an upload (see [`validate`]) and compiles them; the result is
    /// cached. CPU-bound: call it on a blocking thread.
    pub fn prepare(&self, bytes: &[u8], max_bytes: usize) -> Result<(ModuleId, Prepared), InvalidModule> {
        let id = ModuleId::of(bytes);
        if let Some(pre) = self.cached(&id) {
            return Ok((id, pre));
        }
        let module = validate::module(&self.inner.engine, bytes, max_bytes)?;
        let pre =
            self.inner.linker.instantiate_pre(&module).map_err(|e| InvalidModule::UnknownImport(format!("{e:#}")))?;
        self.inner.compiled.lock().unwrap_or_else(|e| e.into_inner()).insert(self.key(id), pre.clone());
        Ok((id, pre))
    }

    /// Compiles modules without the upload checks' size limit (tests, and modules already
    /// accepted once).
    pub fn module(&self, bytes: &[u8]) -> Result<Module, InvalidModule> {
        validate::module(&self.inner.engine, bytes, usize::MAX)
    }

    /// One run of `module` with `input` on stdin and `args` after `argv[0]`.
    pub fn run(&self, module: &Prepared, input: &[u8], args: &[String], limits: Limits) -> Outcome {
        let stdout = MemoryOutputPipe::new(limits.output_bytes.saturating_add(1));
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(ARGV0.to_string());
        argv.extend(args.iter().cloned());
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv)
            .wall_clock(ZeroClock)
            .monotonic_clock(ZeroClock)
            .secure_random(rand::rngs::StdRng::seed_from_u64(0))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(1))
            .insecure_random_seed(0)
            .build_p1();
        let mut store =
            Store::new(&self.inner.engine, Guest { wasi, limiter: MemoryLimiter::new(limits.memory_bytes) });
        store.limiter(|guest| &mut guest.limiter);
        if let Err(e) = store.set_fuel(limits.fuel) {
            return Outcome::Trapped(format!("cannot set fuel: {e}"));
        }
        let ticks = (limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        let result = module
            .instantiate(&mut store)
            .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
            .and_then(|start| start.call(&mut store, ()));
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let memory_denied = store.data().limiter.denied();
        drop(store);
        let out = stdout.contents();
        if out.len() > limits.output_bytes {
            return Outcome::OutputTooLarge { limit: limits.output_bytes };
        }
        let err = match result {
            Ok(()) => return Outcome::Completed { stdout: out.to_vec(), fuel_used },
            Err(err) => err,
        };
        let stderr_tail = || {
            let bytes = stderr.contents();
            String::from_utf8_lossy(&bytes).trim().to_string()
        };
        if let Some(exit) = err.downcast_ref::<I32Exit>() {
            return match exit.0 {
                0 => Outcome::Completed { stdout: out.to_vec(), fuel_used },
                code => Outcome::Exited { code, stderr: stderr_tail() },
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Outcome::OutOfFuel { limit: limits.fuel },
            Some(Trap::Interrupt) => Outcome::DeadlineExceeded,
            _ if memory_denied => Outcome::OutOfMemory { limit: limits.memory_bytes },
            Some(trap) => {
                let stderr = stderr_tail();
                Outcome::Trapped(if stderr.is_empty() { trap.to_string() } else { format!("{trap}; stderr: {stderr}") })
            }
            None => Outcome::Trapped(format!("{err:#}")),
        }
    }

    /// [`WasmEngine::run`] on the async runtime's blocking pool (the caller bounds how many
    /// run at once: the worker's execution slots).
    pub async fn run_blocking(&self, module: Prepared, input: Vec<u8>, args: Vec<String>, limits: Limits) -> Outcome {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.run(&module, &input, &args, limits))
            .await
            .unwrap_or_else(|e| Outcome::Trapped(format!("the run's thread failed: {e}")))
    }
}

/// A clock that always reads zero: time is not an input a replicated run may depend on.
struct ZeroClock;

impl wasmtime_wasi::HostWallClock for ZeroClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for ZeroClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}
