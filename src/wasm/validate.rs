//! What an uploaded module must be, each refusal with a reason a user can act on: WebAssembly
//! (a core module, not text or a component), no larger than `wasm.max_module_bytes`, a WASI
//! command (exports `_start`), and importing only what we provide (`wasi_snapshot_preview1`).

use wasmtime::{Engine, ExternType, Module};

/// The one import module a guest may use.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// The magic number every WebAssembly binary starts with.
const WASM_MAGIC: &[u8] = b"\0asm";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidModule {
    #[error("module of {size} bytes exceeds wasm.max_module_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("not WebAssembly: {0}")]
    NotWasm(String),
    #[error("not a WASI command: it must export a function `_start` taking and returning nothing")]
    NotCommand,
    #[error("imports {module}::{name}, which we do not provide (only {WASI_MODULE})")]
    ForeignImport { module: String, name: String },
    #[error("imports what we do not provide: {0}")]
    UnknownImport(String),
}

/// Checks and compiles `bytes` (CPU-bound).
pub fn module(engine: &Engine, bytes: &[u8], max_bytes: usize) -> Result<Module, InvalidModule> {
    if bytes.len() > max_bytes {
        return Err(InvalidModule::TooLarge { size: bytes.len(), max: max_bytes });
    }
    // Module::new would also take the text format; only binaries are modules here.
    if !bytes.starts_with(WASM_MAGIC) {
        return Err(InvalidModule::NotWasm("it does not start with the WebAssembly magic number".into()));
    }
    let module = Module::new(engine, bytes).map_err(|e| InvalidModule::NotWasm(format!("{e:#}")))?;
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        _ => return Err(InvalidModule::NotCommand),
    }
    if let Some(import) = module.imports().find(|i| i.module() != WASI_MODULE) {
        return Err(InvalidModule::ForeignImport { module: import.module().into(), name: import.name().into() });
    }
    Ok(module)
}
