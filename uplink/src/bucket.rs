//! A token bucket in bytes, shared by everything the recorder sends to the collector.

use std::time::{Duration, Instant};

/// Bytes per second with a small burst allowance. Takers wait in turn; a taker that goes into
/// debt sleeps it off, and because refills use the real elapsed time, sleep overshoot does not
/// accumulate: over any long interval the rate holds.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` bytes per second (0: unlimited). The burst is 50 ms worth, at least `min_burst`
    /// bytes; the bucket starts empty so the first bytes are paced too.
    pub fn new(rate: u64, min_burst: u64) -> TokenBucket {
        let rate = rate as f64;
        TokenBucket {
            rate,
            burst: (rate / 20.0).max(min_burst as f64),
            state: tokio::sync::Mutex::new((0.0, Instant::now())),
        }
    }

    /// The rate, bytes per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        if self.rate <= 0.0 {
            return;
        }
        let mut st = self.state.lock().await;
        let now = Instant::now();
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let left = tokens - n as f64;
        *st = (left, now);
        if left < 0.0 {
            // Holding the lock while in debt keeps later takers behind this one.
            tokio::time::sleep(Duration::from_secs_f64(-left / self.rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn holds_the_rate() {
        let b = TokenBucket::new(4 << 20, 64 << 10);
        let start = Instant::now();
        // 1 MiB in 64 KiB pieces at 4 MiB/s: 250 ms.
        for _ in 0..16 {
            b.take(64 << 10).await;
        }
        let t = start.elapsed().as_secs_f64();
        assert!((0.23..0.30).contains(&t), "took {t} s");
        let free = TokenBucket::new(0, 0);
        let start = Instant::now();
        free.take(1 << 30).await;
        assert!(start.elapsed() < Duration::from_millis(5));
    }
}
