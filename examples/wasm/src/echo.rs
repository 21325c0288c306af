//! Echo: copies its input (stdin) to stdout unchanged. The smallest useful module: what a
//! `wasm` task costs over the built-in `echo` (`./bench.sh --wasm`).

use std::io::{self, Write};

fn main() {
    let mut stdout = io::stdout().lock();
    io::copy(&mut io::stdin().lock(), &mut stdout).expect("stdin to stdout");
    stdout.flush().expect("stdout");
}
