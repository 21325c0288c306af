//! Word count, like `wc`: reads its input on stdin and prints `<lines> <words> <bytes>`.
//! A word is a run of characters that are not whitespace.

use std::io::{self, Read, Write};

fn main() {
    let mut input = Vec::new();
    io::stdin().read_to_end(&mut input).expect("stdin");
    let text = String::from_utf8_lossy(&input);
    let lines = input.iter().filter(|b| **b == b'\n').count();
    let words = text.split_whitespace().count();
    writeln!(io::stdout(), "{lines} {words} {}", input.len()).expect("stdout");
}
