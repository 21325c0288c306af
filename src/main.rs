//! `p2p-node`: parse the command line, then hand over to the library.

use clap::Parser;

/// jemalloc rather than glibc's malloc: it hands memory freed after a burst (a cluster forming,
/// a catch-up frame, a batch of tasks) back to the kernel within seconds, where glibc's arenas
/// keep it resident (docs/scale.md, sixth round: 7.95 against 10.1 MiB per node at 100 nodes).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let args = p2p_network::cli::Args::parse();
    match p2p_network::cli::main(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("p2p-node: {e:#}");
            std::process::exit(1);
        }
    }
}
