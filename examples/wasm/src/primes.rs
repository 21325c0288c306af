//! Prime sieve (Eratosthenes): reads a limit N on stdin (or takes it as the first argument),
//! prints how many primes are at most N and the largest of them: `<count> <largest>`.
//! CPU- and memory-heavy on purpose: N = 10,000,000 takes a 10 MB sieve.

use std::io::{self, Read, Write};

#[path = "shared/primes.rs"]
mod primes;

/// Largest N accepted: the sieve is one byte per number.
const MAX_N: usize = 100_000_000;

fn main() {
    let mut text = std::env::args().nth(1).unwrap_or_default();
    if text.trim().is_empty() {
        io::stdin().read_to_string(&mut text).expect("stdin");
    }
    let n: usize = match text.trim().parse() {
        Ok(n) if n <= MAX_N => n,
        _ => {
            eprintln!("the input must be a whole number 0..={MAX_N}, got {:?}", text.trim());
            std::process::exit(2);
        }
    };
    let (count, largest) = primes::sieve(n);
    writeln!(io::stdout(), "{count} {largest}").expect("stdout");
}
