//! Which key each request asks for: uniform, Zipf(s), or sequential.
//!
//! - `uniform`: every key equally likely.
//! - `zipf:S`: key of rank k (0-based) has weight 1/(k+1)^S; key 0 is the hottest. Sampling is a
//!   binary search in a precomputed CDF (one `f64` per key), ~20 steps for a million keys.
//! - `seq`: keys in order 0, 1, 2, .. shared by every connection and thread (with `--requests N`
//!   this visits each key once: the warm-up pass of the peers script).
//!
//! Each runtime thread owns a [`Picker`] with its own fast non-cryptographic generator (wyrand),
//! seeded from `--seed` and the thread number, so runs are repeatable.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// The key distribution named on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mix {
    Uniform,
    Zipf { s: f64 },
    Seq,
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Mix> {
        match s {
            "uniform" => Ok(Mix::Uniform),
            "seq" => Ok(Mix::Seq),
            "zipf" => Ok(Mix::Zipf { s: 1.0 }),
            _ => {
                let Some(exp) = s.strip_prefix("zipf:") else {
                    bail!("unknown mix {s:?}: expected uniform, seq, zipf or zipf:S");
                };
                let s: f64 = exp.parse().with_context(|| format!("zipf exponent {exp:?}"))?;
                if !(s.is_finite() && s >= 0.0) {
                    bail!("zipf exponent {s} must be finite and >= 0");
                }
                Ok(Mix::Zipf { s })
            }
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mix::Uniform => f.write_str("uniform"),
            Mix::Seq => f.write_str("seq"),
            Mix::Zipf { s } => write!(f, "zipf:{s}"),
        }
    }
}

/// State shared by all threads' pickers: the Zipf CDF and the sequential counter.
pub struct MixTable {
    mix: Mix,
    keys: u64,
    /// Zipf only: cumulative weights, normalised so the last is 1.0.
    cdf: Vec<f64>,
    next_seq: AtomicU64,
}

impl MixTable {
    pub fn new(mix: Mix, keys: u64) -> MixTable {
        let keys = keys.max(1);
        let cdf = match mix {
            Mix::Zipf { s } => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (0..keys)
                    .map(|k| {
                        acc += 1.0 / ((k + 1) as f64).powf(s);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                cdf
            }
            _ => Vec::new(),
        };
        MixTable { mix, keys, cdf, next_seq: AtomicU64::new(0) }
    }
}

/// One thread's key chooser.
pub struct Picker {
    table: Arc<MixTable>,
    rng: WyRand,
}

impl Picker {
    pub fn new(table: Arc<MixTable>, seed: u64) -> Picker {
        Picker { table, rng: WyRand(seed) }
    }

    /// The next key index, in `0..keys`.
    pub fn next_key(&mut self) -> usize {
        let t = &*self.table;
        let k = match t.mix {
            Mix::Uniform => self.rng.below(t.keys),
            Mix::Seq => t.next_seq.fetch_add(1, Ordering::Relaxed) % t.keys,
            Mix::Zipf { .. } => {
                let u = self.rng.unit();
                // First rank whose cumulative weight exceeds u; the clamp covers rounding at 1.0.
                (t.cdf.partition_point(|&c| c <= u) as u64).min(t.keys - 1)
            }
        };
        k as usize
    }
}

/// wyrand: one multiply per number, good enough statistics for picking keys.
pub struct WyRand(pub u64);

impl WyRand {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..n` (multiply-shift: no modulo bias worth the name, no division).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(mix: Mix, keys: u64, draws: usize) -> Vec<u64> {
        let mut p = Picker::new(Arc::new(MixTable::new(mix, keys)), 42);
        let mut h = vec![0u64; keys as usize];
        for _ in 0..draws {
            h[p.next_key()] += 1;
        }
        h
    }

    #[test]
    fn parses_mixes() {
        assert_eq!("uniform".parse::<Mix>().unwrap(), Mix::Uniform);
        assert_eq!("seq".parse::<Mix>().unwrap(), Mix::Seq);
        assert_eq!("zipf".parse::<Mix>().unwrap(), Mix::Zipf { s: 1.0 });
        assert_eq!("zipf:0.8".parse::<Mix>().unwrap(), Mix::Zipf { s: 0.8 });
        assert!("zipf:-1".parse::<Mix>().is_err());
        assert!("normal".parse::<Mix>().is_err());
    }

    #[test]
    fn uniform_covers_every_key_evenly() {
        let h = histogram(Mix::Uniform, 10, 100_000);
        for &c in &h {
            assert!((9_000..11_000).contains(&c), "{h:?}");
        }
    }

    #[test]
    fn zipf_follows_its_weights() {
        // s = 1 over 100 keys: P(0) = 1/H(100) ~ 0.193, P(1) = P(0)/2.
        let h = histogram(Mix::Zipf { s: 1.0 }, 100, 200_000);
        let p0 = h[0] as f64 / 200_000.0;
        assert!((0.18..0.21).contains(&p0), "p0 = {p0}");
        let ratio = h[0] as f64 / h[1] as f64;
        assert!((1.85..2.15).contains(&ratio), "ratio = {ratio}");
        assert!(h[99] > 0);
        // s = 0 is uniform.
        let h = histogram(Mix::Zipf { s: 0.0 }, 4, 40_000);
        assert!(h.iter().all(|&c| (9_000..11_000).contains(&c)), "{h:?}");
    }

    #[test]
    fn seq_visits_keys_in_order() {
        let table = Arc::new(MixTable::new(Mix::Seq, 3));
        let mut a = Picker::new(table.clone(), 1);
        let mut b = Picker::new(table, 2);
        let got: Vec<usize> = (0..4).flat_map(|_| [a.next_key(), b.next_key()]).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0, 1]);
    }
}
