//! Loopback ports for test nodes whose configs must name them.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A free loopback port for a node to bind, for configs that must name their ports (the CLI
/// finds the node through them). A port the kernel picked with bind(0) is from its ephemeral
/// range, where any outgoing connection may take it before the node binds it (CI saw
/// "Address already in use"); these come from below that range (32768 on Linux), from a block
/// of this test process's own, never twice, and only once a probe could bind them.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const BLOCK: u32 = 400;
    const BLOCKS: u32 = 50; // 10,000 + 50 x 400 = 30,000, below the ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = FIRST + (std::process::id() % BLOCKS) * BLOCK;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < BLOCK, "this test process used up its {BLOCK} ports");
        let port = (base + n) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
