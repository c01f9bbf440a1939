//! Which packs `check --read-data` reads: all, a random percentage, or part n of m. A part
//! reads the same packs every time (so 1/m … m/m over successive runs read each pack once);
//! a percentage draws a new seed each run, so nightly runs reach every pack over time.

use crate::id::Id;

/// Which packs `check` downloads and verifies in full.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    /// Structure only: no pack is downloaded.
    #[default]
    None,
    /// Every pack.
    All,
    /// The packs whose id, mixed with `seed` and read as a fraction of the id space, is below
    /// `percent`/100. `parse_subset` draws a new seed each run (restic's rule for `x%`): a
    /// nightly 10% check reaches every pack over the nights, not the same tenth each time.
    Percent { percent: f64, seed: u64 },
    /// Part `n` of `m` (1-based): the packs whose id modulo `m` is `n - 1`. Running 1/m, 2/m,
    /// …, m/m (on successive days, say) reads every pack once.
    Subset { n: u32, m: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid read-data subset {0:?}: give a percentage such as 10% or a part such as 1/5")]
pub struct ParseSubsetError(pub String);

impl ReadData {
    /// Parses `10%` (0 < p ≤ 100) or `n/m` (1 ≤ n ≤ m).
    pub fn parse_subset(spec: &str) -> Result<ReadData, ParseSubsetError> {
        let err = || ParseSubsetError(spec.to_string());
        let trimmed = spec.trim();
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent: f64 = number.trim().parse().map_err(|_| err())?;
            // Written so that NaN fails too.
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(err());
            }
            return Ok(if percent == 100.0 {
                ReadData::All
            } else {
                ReadData::Percent { percent, seed: rand::random() }
            });
        }
        let (n, m) = trimmed.split_once('/').ok_or_else(err)?;
        let n: u32 = n.trim().parse().map_err(|_| err())?;
        let m: u32 = m.trim().parse().map_err(|_| err())?;
        if n == 0 || n > m {
            return Err(err());
        }
        Ok(if m == 1 { ReadData::All } else { ReadData::Subset { n, m } })
    }

    /// Whether the pack named `id` is read in full.
    pub fn selects(&self, id: &Id) -> bool {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.0[..8]);
        let x = u64::from_be_bytes(first);
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Percent { percent, seed } => ((x ^ seed) as f64) / 18_446_744_073_709_551_616.0 < percent / 100.0,
            ReadData::Subset { n, m } => m > 0 && x % u64::from(m) == u64::from(n.saturating_sub(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_subset_and_selection() {
        assert!(matches!(ReadData::parse_subset("10%"), Ok(ReadData::Percent { percent: 10.0, .. })));
        assert!(matches!(ReadData::parse_subset(" 2.5 %"), Ok(ReadData::Percent { percent: 2.5, .. })));
        assert_eq!(ReadData::parse_subset("100%"), Ok(ReadData::All));
        assert_eq!(ReadData::parse_subset("1/5"), Ok(ReadData::Subset { n: 1, m: 5 }));
        assert_eq!(ReadData::parse_subset("1/1"), Ok(ReadData::All));
        for bad in ["0%", "101%", "NaN%", "x", "0/5", "6/5", "1/0", "1/", "%", "-3%"] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad} accepted");
        }
        let ids: Vec<Id> = (0u32..2000).map(|i| Id::of_bytes(&i.to_le_bytes())).collect();
        for m in [2u32, 3, 7] {
            for id in &ids {
                let hits = (1..=m).filter(|&n| ReadData::Subset { n, m }.selects(id)).count();
                assert_eq!(hits, 1);
            }
        }
        let ten = ids.iter().filter(|id| ReadData::Percent { percent: 10.0, seed: 0 }.selects(id)).count();
        assert!((100..300).contains(&ten), "{ten}");
        assert!(ids.iter().all(|id| !ReadData::Percent { percent: 10.0, seed: 5 }.selects(id)
            || ReadData::Percent { percent: 20.0, seed: 5 }.selects(id)));
        // Each run (each seed) picks another tenth, of about the same size.
        let picked = |spec: &str| -> std::collections::HashSet<Id> {
            let subset = ReadData::parse_subset(spec).expect("valid");
            ids.iter().filter(|id| subset.selects(id)).copied().collect()
        };
        let (first, second) = (picked("10%"), picked("10%"));
        assert!((100..300).contains(&first.len()) && (100..300).contains(&second.len()));
        assert_ne!(first, second, "two 10% runs read the same packs");
        // n/m stays deterministic: the same part every time.
        assert_eq!(picked("2/7"), picked("2/7"));
        assert!(!ReadData::None.selects(&ids[0]) && ReadData::All.selects(&ids[0]));
    }
}
