//! Chunk sizes for long work that shares the decode thread with running streams: a prompt or
//! an embedding input is evaluated a chunk per step, and while other sequences wait for their
//! next token a chunk is cut to what the measured speed does in [`SHARED_SLICE`], so that no
//! stream waits long between two tokens.

use std::time::Duration;

/// How long one chunk may take while other sequences wait for their next token.
pub const SHARED_SLICE: Duration = Duration::from_millis(60);
/// The smallest chunk worth a forward pass.
pub const MIN_CHUNK: usize = 16;

/// Tokens per second measured over the last evaluation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pace {
    rate: Option<f64>,
}

impl Pace {
    /// Tokens for the next chunk: at most `limit`, and when `shared` (others wait for this
    /// step) at most what fits in [`SHARED_SLICE`]; before any measurement, [`MIN_CHUNK`].
    pub fn chunk(&self, limit: usize, shared: bool) -> usize {
        let limit = limit.max(1);
        if !shared {
            return limit;
        }
        let fits = self
            .rate
            .map_or(MIN_CHUNK, |r| (r * SHARED_SLICE.as_secs_f64()) as usize);
        limit.min(fits.max(MIN_CHUNK))
    }

    /// Notes that `tokens` took `took` (a step too short to time teaches nothing).
    pub fn record(&mut self, tokens: usize, took: Duration) {
        if tokens > 0 && took > Duration::ZERO {
            self.rate = Some(tokens as f64 / took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_a_chunk_is_the_limit() {
        let mut pace = Pace::default();
        assert_eq!(pace.chunk(512, false), 512);
        pace.record(10, Duration::from_secs(100));
        assert_eq!(pace.chunk(512, false), 512);
    }

    #[test]
    fn shared_chunks_fit_the_slice_at_the_measured_speed() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.chunk(512, true),
            MIN_CHUNK,
            "unmeasured: the smallest chunk"
        );
        pace.record(1000, Duration::from_secs(1));
        assert_eq!(pace.chunk(512, true), 60);
        pace.record(100_000, Duration::from_secs(1));
        assert_eq!(pace.chunk(512, true), 512, "never above the limit");
        pace.record(1, Duration::from_secs(1));
        assert_eq!(
            pace.chunk(512, true),
            MIN_CHUNK,
            "never below the smallest chunk"
        );
        assert_eq!(pace.chunk(4, true), 4);
        pace.record(0, Duration::ZERO);
        assert_eq!(
            pace.chunk(512, true),
            MIN_CHUNK,
            "an empty step changes nothing"
        );
    }
}
