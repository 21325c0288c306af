//! `p2p-node`: parse the command line, then hand over to the library.

use clap::Parser;

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
