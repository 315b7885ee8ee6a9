//! The one random source: the OS CSPRNG in production, a deterministic stream in tests.

use thiserror::Error;

/// The operating system refused to hand out random bytes.
#[derive(Debug, Error)]
#[error("the system random source failed: {0}")]
pub struct RandomError(String);

/// Fills buffers with random bytes.
pub trait Random {
    /// Fills `buf` entirely, or fails; never returns partially filled output.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError>;
}

/// The kernel's random source (`getrandom(2)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
    }
}

/// A predictable byte stream (xorshift) for tests that need repeatable secrets and codes.
#[derive(Debug, Clone)]
pub struct SeededRandom(u64);

impl SeededRandom {
    /// A stream that starts from `seed` (zero is replaced, xorshift cannot leave it).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        for byte in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *byte = (self.0 >> 24) as u8;
        }
        Ok(())
    }
}

impl<R: Random + ?Sized> Random for &mut R {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_random_fills_differently_each_time() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        OsRandom.fill(&mut a).unwrap();
        OsRandom.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn seeded_random_repeats() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        SeededRandom::new(9).fill(&mut a).unwrap();
        SeededRandom::new(9).fill(&mut b).unwrap();
        assert_eq!(a, b);
        let mut c = [0u8; 16];
        SeededRandom::new(10).fill(&mut c).unwrap();
        assert_ne!(a, c);
    }
}
