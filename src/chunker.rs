//! Keyed content-defined chunking: FastCDC (v2020, normalisation level 1) with a secret gear
//! table, so boundaries don't reveal content to whoever sees chunk sizes. Format v2 draws the
//! whole table from a keyed PRF of the domain's `id_key` (as restic and Borg 2 draw a random
//! per-repository table); format v1 XORs one 64-bit seed into fastcdc's public table, and keeps
//! doing so, because changing it would move every boundary and lose deduplication.
//! Streams from any reader with one reusable buffer of at most the maximum chunk size, so
//! memory is bounded whatever the file size.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, Normalization, MASKS};

use crate::crypto::IdKey;
use crate::format::config::{ChunkerParams, GearKeying};

/// Everything that decides where chunks end: the sizes, the (secret) gear table and the masks.
/// Built once per backup and shared by every reader thread.
pub struct Gear {
    params: ChunkerParams,
    table: Box<[u64; 256]>,
    shifted: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Gear {
    /// `params` must be valid (`ChunkerParams::is_valid`); configs are checked on decode.
    pub fn new(params: ChunkerParams, keying: GearKeying, id_key: &IdKey) -> Gear {
        match keying {
            GearKeying::SeedXor => Gear::seeded(params, id_key.chunker_seed()),
            GearKeying::KeyedTable => Gear::with_table(params, id_key.chunker_gear()),
        }
    }

    /// Format v1: fastcdc's table XORed with `seed`.
    pub fn seeded(params: ChunkerParams, seed: u64) -> Gear {
        let (table, shifted) = get_gear_with_seed(seed);
        Gear::assemble(params, table, shifted)
    }

    pub fn with_table(params: ChunkerParams, table: Box<[u64; 256]>) -> Gear {
        // fastcdc's second table is the first shifted by one (it rolls two bytes per step).
        let shifted = Box::new(table.map(|entry| entry << 1));
        Gear::assemble(params, table, shifted)
    }

    fn assemble(params: ChunkerParams, table: Box<[u64; 256]>, shifted: Box<[u64; 256]>) -> Gear {
        // As fastcdc's `FastCDC::with_level_and_seed` derives them, so v1 boundaries stay put.
        let bits = logarithm2(params.avg);
        let normalization = Normalization::Level1.bits();
        Gear {
            params,
            table,
            shifted,
            mask_s: MASKS[(bits + normalization) as usize],
            mask_l: MASKS[(bits - normalization) as usize],
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The length of the chunk at the start of `window` (all of it if it ends the stream).
    fn cut(&self, window: &[u8]) -> usize {
        let p = self.params;
        let (_, len) = cut_gear(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.table,
            &self.shifted,
        );
        len
    }
}

pub struct Chunker<'g, R> {
    reader: R,
    gear: &'g Gear,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    eof: bool,
}

impl<'g, R: Read> Chunker<'g, R> {
    pub fn new(reader: R, gear: &'g Gear) -> Chunker<'g, R> {
        Chunker::with_buffer(reader, gear, Vec::new(), u64::MAX)
    }

    /// Like `new`, reusing `buffer`'s allocation (see [`Chunker::into_parts`]) and sizing it
    /// for `size_hint` bytes: a small file then costs no large allocation or memset. The
    /// buffer still grows to the maximum chunk size if the stream turns out longer.
    pub fn with_buffer(reader: R, gear: &'g Gear, mut buffer: Vec<u8>, size_hint: u64) -> Chunker<'g, R> {
        let full = gear.params.max as usize;
        let wanted = size_hint.saturating_add(1).min(full as u64) as usize;
        buffer.clear();
        buffer.resize(wanted, 0);
        Chunker { reader, gear, buf: buffer, start: 0, filled: 0, eof: false }
    }

    /// Returns the reader, e.g. to check whether the file grew past its stat size, and the
    /// buffer for the next file.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.reader, self.buf)
    }

    /// Fills the buffer until at least `max` bytes follow `start`, or the reader ends.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.gear.params.max as usize;
        if self.filled - self.start >= max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        // Every cut compacts what is left to the front, so `max` bytes of buffer always hold
        // the window the next cut needs. (A buffer of two windows would move less, but it
        // costs a window's memory more for each large file read, for ~2 % of the CPU.)
        while self.filled < max && !self.eof {
            if self.filled == self.buf.len() {
                let grown = (self.buf.len() * 2).max(64 << 10).min(max);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = Vec::new();
        Ok(self.next_chunk_into(&mut chunk)?.then_some(chunk))
    }

    /// Like [`next_chunk`](Self::next_chunk), into `out` (replacing what it held): a caller
    /// that recycles chunk buffers saves the page faults of fresh ones. False at the end.
    pub fn next_chunk_into(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        self.fill()?;
        let remaining = self.filled - self.start;
        if remaining == 0 {
            return Ok(false);
        }
        let end = self.start + self.gear.cut(&self.buf[self.start..self.filled]);
        out.clear();
        // Exactly: growing by doubling would leave a recycled buffer up to twice the largest chunk.
        out.reserve_exact(end - self.start);
        out.extend_from_slice(&self.buf[self.start..end]);
        self.start = end;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: ChunkerParams = ChunkerParams { min: 1024, avg: 4096, max: 16384 };

    fn chunks(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        chunks_with(data, &Gear::seeded(SMALL, seed))
    }

    fn chunks_with(data: &[u8], gear: &Gear) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::new(data, gear);
        std::iter::from_fn(|| chunker.next_chunk().unwrap()).collect()
    }

    fn keyed(key: u8) -> Gear {
        Gear::new(SMALL, GearKeying::KeyedTable, &IdKey::from_bytes([key; 32]))
    }

    fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// A reader that returns at most 7 bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn chunks_reassemble_and_respect_bounds(len in 0usize..100_000, seed in any::<u64>(), state in 1u64..) {
            let data = pseudo_random(len, state);
            let parts = chunks(&data, seed);
            prop_assert_eq!(parts.concat(), data);
            for (i, part) in parts.iter().enumerate() {
                prop_assert!(part.len() <= SMALL.max as usize);
                if i + 1 < parts.len() {
                    prop_assert!(part.len() >= SMALL.min as usize);
                }
            }
        }

        #[test]
        fn a_wrong_size_hint_changes_nothing(len in 0usize..60_000, hint in 0u64..70_000, state in 1u64..) {
            let data = pseudo_random(len, state);
            let gear = Gear::seeded(SMALL, 9);
            let mut chunker = Chunker::with_buffer(Trickle(&data), &gear, vec![7; 3], hint);
            let hinted: Vec<Vec<u8>> = std::iter::from_fn(|| chunker.next_chunk().unwrap()).collect();
            prop_assert_eq!(hinted, chunks(&data, 9));
        }

        #[test]
        fn boundaries_do_not_depend_on_read_sizes(len in 0usize..60_000, state in 1u64..) {
            let data = pseudo_random(len, state);
            let gear = Gear::seeded(SMALL, 9);
            let mut chunker = Chunker::new(Trickle(&data), &gear);
            let trickled: Vec<Vec<u8>> = std::iter::from_fn(|| chunker.next_chunk().unwrap()).collect();
            prop_assert_eq!(trickled, chunks(&data, 9));
        }

        /// Format v1 repositories must keep the boundaries fastcdc's own seeded chunker gives.
        #[test]
        fn v1_boundaries_are_fastcdcs(len in 0usize..100_000, seed in any::<u64>(), state in 1u64..) {
            let data = pseudo_random(len, state);
            let theirs: Vec<Vec<u8>> = fastcdc::v2020::FastCDC::with_level_and_seed(
                &data, SMALL.min, SMALL.avg, SMALL.max, Normalization::Level1, seed,
            )
            .map(|c| data[c.offset..c.offset + c.length].to_vec())
            .collect();
            prop_assert_eq!(chunks(&data, seed), theirs);
        }

        #[test]
        fn keyed_chunks_reassemble_and_respect_bounds(len in 0usize..100_000, key in any::<u8>(), state in 1u64..) {
            let data = pseudo_random(len, state);
            let parts = chunks_with(&data, &keyed(key));
            prop_assert_eq!(parts.concat(), data);
            for (i, part) in parts.iter().enumerate() {
                prop_assert!(part.len() <= SMALL.max as usize);
                if i + 1 < parts.len() {
                    prop_assert!(part.len() >= SMALL.min as usize);
                }
            }
        }
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let data = pseudo_random(200_000, 42);
        let mut edited = data.clone();
        edited.splice(100_000..100_000, b"inserted".iter().copied());
        let before = chunks(&data, 1);
        let after = chunks(&edited, 1);
        let shared = after.iter().filter(|c| before.contains(c)).count();
        assert!(shared + 3 >= after.len(), "{shared} of {} chunks shared", after.len());
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(200_000, 7);
        assert_ne!(chunks(&data, 1), chunks(&data, 2));
    }

    #[test]
    fn the_key_decides_v2_boundaries() {
        let data = pseudo_random(400_000, 11);
        assert_eq!(chunks_with(&data, &keyed(1)), chunks_with(&data, &keyed(1)));
        assert_ne!(chunks_with(&data, &keyed(1)), chunks_with(&data, &keyed(2)));
        // The keyed table is not the public one with a seed folded in.
        let key = IdKey::from_bytes([1; 32]);
        assert_ne!(chunks_with(&data, &keyed(1)), chunks(&data, key.chunker_seed()));
        // Sizes still average near the target.
        let parts = chunks_with(&data, &keyed(3));
        let mean = data.len() / parts.len();
        assert!((2_000..9_000).contains(&mean), "mean chunk {mean}");
    }
}
