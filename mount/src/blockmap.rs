//! A file's block list as prefix sums: file offset → block index by binary search.
//!
//! Pure arithmetic, no I/O. A read of `size` bytes at `offset` becomes a list of
//! [`Segment`]s, one per block it touches, which the reader fetches and concatenates.

use crate::source::{BlockKey, BlockRef};

/// The part of one block that a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Index of the block in the file.
    pub(crate) block: usize,
    /// First byte wanted, relative to the block start.
    pub(crate) start: usize,
    /// One past the last byte wanted, relative to the block start.
    pub(crate) end: usize,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct BlockMap {
    keys: Vec<BlockKey>,
    /// `ends[i]` is the file offset one past block `i`.
    ends: Vec<u64>,
}

impl BlockMap {
    pub(crate) fn new(blocks: &[BlockRef]) -> Self {
        let mut end = 0u64;
        let mut ends = Vec::with_capacity(blocks.len());
        for block in blocks {
            end = end.saturating_add(block.len);
            ends.push(end);
        }
        BlockMap { keys: blocks.iter().map(|b| b.key).collect(), ends }
    }

    /// Total bytes, the sum of the block lengths.
    pub(crate) fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Key of block `i` (`i < len()`).
    pub(crate) fn key(&self, i: usize) -> &BlockKey {
        &self.keys[i]
    }

    /// File offset where block `i` starts.
    pub(crate) fn start(&self, i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Declared length of block `i`.
    pub(crate) fn block_len(&self, i: usize) -> u64 {
        self.ends[i] - self.start(i)
    }

    /// The block holding byte `offset`, or `None` at or past the end.
    pub(crate) fn block_at(&self, offset: u64) -> Option<usize> {
        let i = self.ends.partition_point(|&end| end <= offset);
        (i < self.keys.len()).then_some(i)
    }

    /// The segments covering `[offset, offset + size)`, clipped at the end of the file; empty
    /// when `offset` is at or past the end.
    pub(crate) fn segments(&self, offset: u64, size: u64) -> Vec<Segment> {
        let end = offset.saturating_add(size).min(self.size());
        let mut segments = Vec::new();
        let Some(mut block) = self.block_at(offset) else {
            return segments;
        };
        let mut pos = offset;
        while pos < end && block < self.keys.len() {
            let block_start = self.start(block);
            let stop = end.min(self.ends[block]);
            if stop > pos {
                segments.push(Segment {
                    block,
                    // Both fit in usize: they are below the block length, which a block in
                    // memory must have.
                    start: (pos - block_start) as usize,
                    end: (stop - block_start) as usize,
                });
            }
            pos = stop;
            block += 1;
        }
        segments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lens: &[u64]) -> BlockMap {
        let blocks: Vec<BlockRef> =
            lens.iter().enumerate().map(|(i, &len)| BlockRef { key: [i as u8; 32], len }).collect();
        BlockMap::new(&blocks)
    }

    fn seg(block: usize, start: usize, end: usize) -> Segment {
        Segment { block, start, end }
    }

    #[test]
    fn finds_blocks_by_offset() {
        let m = map(&[10, 5, 0, 20]);
        assert_eq!(m.size(), 35);
        assert_eq!(m.block_at(0), Some(0));
        assert_eq!(m.block_at(9), Some(0));
        assert_eq!(m.block_at(10), Some(1));
        assert_eq!(m.block_at(14), Some(1));
        assert_eq!(m.block_at(15), Some(3), "the empty block holds no byte");
        assert_eq!(m.block_at(34), Some(3));
        assert_eq!(m.block_at(35), None);
        assert_eq!(m.start(3), 15);
        assert_eq!(m.block_len(3), 20);
    }

    #[test]
    fn reads_within_and_across_blocks() {
        let m = map(&[10, 5, 0, 20]);
        assert_eq!(m.segments(2, 3), [seg(0, 2, 5)]);
        assert_eq!(m.segments(8, 10), [seg(0, 8, 10), seg(1, 0, 5), seg(3, 0, 3)]);
        assert_eq!(m.segments(0, 1000), [seg(0, 0, 10), seg(1, 0, 5), seg(3, 0, 20)]);
    }

    #[test]
    fn reads_at_or_past_the_end_are_empty_or_clipped() {
        let m = map(&[10, 5]);
        assert!(m.segments(15, 10).is_empty());
        assert!(m.segments(1000, 10).is_empty());
        assert_eq!(m.segments(12, 100), [seg(1, 2, 5)]);
        assert!(m.segments(3, 0).is_empty());
        assert!(m.segments(u64::MAX, u64::MAX).is_empty());
        assert!(map(&[]).segments(0, 10).is_empty());
    }
}
