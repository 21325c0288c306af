//! The gateway's timers: what each one means, and the one queue they wait in until the
//! node's loop hands them back through `Gateway::on_timer`.

use std::time::Duration;

use futures::StreamExt;
use libp2p::PeerId;
use tokio_util::time::{DelayQueue, delay_queue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    AttemptDeadline {
        id: String,
        attempt: u32,
    },
    RetryDue {
        id: String,
    },
    QueueDeadline {
        id: String,
        seq: u64,
    },
    /// A worker that answered busy may be offered work again.
    Unsaturate {
        peer: PeerId,
    },
}

/// The armed timers.
pub(super) struct Timers(DelayQueue<Timer>);

impl Timers {
    pub(super) fn new() -> Self {
        Self(DelayQueue::new())
    }

    /// Arms `timer` to fire `after` from now; the key disarms it.
    pub(super) fn arm(&mut self, timer: Timer, after: Duration) -> delay_queue::Key {
        self.0.insert(timer, after)
    }

    /// Disarms a timer that has not fired. A key is dropped when its timer fires, as
    /// `DelayQueue` panics on a key it has already handed out.
    pub(super) fn disarm(&mut self, key: &delay_queue::Key) {
        self.0.remove(key);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) async fn next(&mut self) -> Option<Timer> {
        self.0.next().await.map(|e| e.into_inner())
    }
}
