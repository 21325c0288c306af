//! How often anti-entropy runs: every `ledger.sync_interval_ms` while the ledger changes, and
//! less often while rounds find nothing new, up to [`MAX_BACKOFF`] times that. In an idle
//! cluster every node's round is a stream opened, a digest compared and the stream closed, a
//! few times a second across a 100-node cluster for nothing; any news (a round that fetched
//! blocks, a block or proof by gossip) brings the pace straight back.

use std::time::Duration;

/// The longest pause between rounds, in `sync_interval_ms`.
pub const MAX_BACKOFF: u32 = 8;

#[derive(Debug, Clone, Copy)]
pub struct SyncPace {
    base: Duration,
    every: Duration,
}

impl SyncPace {
    pub fn new(base: Duration) -> Self {
        Self { base, every: base }
    }

    /// The pause before the next round.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// A round found the peer's ledger equal to ours: wait twice as long next time.
    pub fn same(&mut self) {
        self.every = (self.every * 2).min(self.base * MAX_BACKOFF);
    }

    /// Something new arrived: back to `sync_interval_ms`.
    pub fn news(&mut self) {
        self.every = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_that_find_nothing_slow_down_to_the_cap_and_news_restores_the_pace() {
        let base = Duration::from_secs(2);
        let mut pace = SyncPace::new(base);
        assert_eq!(pace.every(), base);
        let mut seen = Vec::new();
        for _ in 0..5 {
            pace.same();
            seen.push(pace.every().as_secs());
        }
        assert_eq!(seen, [4, 8, 16, 16, 16]);
        pace.news();
        assert_eq!(pace.every(), base);
    }
}
