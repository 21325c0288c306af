//! The sieve of Eratosthenes behind `primes.rs`, apart from its `main` so the same source
//! also compiles natively (`examples/wasm_bench.rs` compares the two).

/// How many primes are at most `n`, and the largest of them (0 when there is none).
pub fn sieve(n: usize) -> (usize, usize) {
    let mut composite = vec![false; n + 1];
    let (mut count, mut largest) = (0usize, 0usize);
    for i in 2..=n {
        if composite[i] {
            continue;
        }
        count += 1;
        largest = i;
        // i * i would overflow a 32-bit usize (wasm32) for large i; nothing to mark then.
        if i > n / i {
            continue;
        }
        let mut j = i * i;
        while j <= n {
            composite[j] = true;
            j += i;
        }
    }
    (count, largest)
}
