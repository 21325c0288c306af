//! SHA-256 of the input: reads stdin, prints the digest in hex. The hash itself is in
//! `shared/sha256.rs` (written out, FIPS 180-4, so the module needs no crates).

use std::io::{self, Read, Write};

#[path = "shared/sha256.rs"]
mod sha256;

fn main() {
    let mut input = Vec::new();
    io::stdin().read_to_end(&mut input).expect("stdin");
    let hex: String = sha256::sha256(&input).iter().map(|b| format!("{b:02x}")).collect();
    writeln!(io::stdout(), "{hex}").expect("stdout");
}
