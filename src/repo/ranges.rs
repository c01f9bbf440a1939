//! Reading many blobs of one pack with one ranged read. Over a network each request costs a
//! round trip, so restore, the mount and the tree walk read a pack *region* (neighbouring
//! blobs, small gaps bridged) once and open each blob in it, instead of one request per blob.
//! Verification stays where it is ([`Repository::open_sealed_blob`]); a blob that fails here is
//! read again on its own through [`Repository::read_blob_into`] with [`Copies::Current`], which
//! also tries other copies and a re-synced index.

use super::{Copies, RepoError, Repository};
use crate::crypto::SymKey;
use crate::db::BlobLocation;
use crate::format::pack::{self, BlobKind, HEADER_LEN};
use crate::id::Id;
use crate::layout as paths;

/// Gaps up to this long between two wanted blobs are read and thrown away rather than cost a
/// second request: at 30 ms a round trip and ~100 MB/s, 256 KiB is worth ~3 ms of transfer.
pub const REGION_GAP: u64 = 256 << 10;
/// No region read is longer than this (one blob longer than it is read alone): it bounds each
/// reader's buffer.
pub const REGION_MAX: u64 = 8 << 20;
/// A miss of one tree or mounted block reads at most this much around it (see
/// [`Repository::region_around`]).
pub const AROUND_MAX: u64 = 4 << 20;

/// Groups blobs (with whatever the caller attaches to each) into regions: same pack, by
/// offset, neighbours closer than `gap` together, each region spanning at most `max` bytes
/// (a longer blob alone). Regions come out in pack order, then offset order.
pub fn plan_regions<T>(mut items: Vec<(BlobLocation, T)>, gap: u64, max: u64) -> Vec<Vec<(BlobLocation, T)>> {
    items.sort_by(|a, b| (a.0.pack, a.0.entry.offset).cmp(&(b.0.pack, b.0.entry.offset)));
    let mut regions: Vec<Vec<(BlobLocation, T)>> = Vec::new();
    let mut span = (0u64, 0u64);
    for item in items {
        let (start, end) = bounds(&item.0);
        let joins = regions.last().and_then(|r| r.last()).is_some_and(|(last, _)| {
            last.pack == item.0.pack && start <= span.1 + gap && end.max(span.1) - span.0 <= max
        });
        if joins {
            span.1 = span.1.max(end);
            regions.last_mut().expect("joined a region").push(item);
        } else {
            span = (start, end);
            regions.push(vec![item]);
        }
    }
    regions
}

fn bounds(location: &BlobLocation) -> (u64, u64) {
    let start = location.entry.offset as u64;
    (start, start + location.entry.length as u64)
}

impl Repository {
    /// Reads the blobs of one region (same pack, sorted by offset, as [`plan_regions`] makes
    /// them) with one ranged read, and calls `each(i, plaintext)` exactly once for every
    /// `locations[i]`, in order. A blob that cannot be opened from the region (or all of them,
    /// when the read fails) is read on its own, with the usual fallbacks, so `each` sees the
    /// same result a single read would give. `sealed` and `out` are reused buffers.
    pub fn read_region(
        &self,
        locations: &[BlobLocation],
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
        each: impl FnMut(usize, Result<&[u8], RepoError>),
    ) {
        self.read_region_of(locations, Copies::Current, sealed, out, each)
    }

    /// [`read_region`](Self::read_region) for a caller that decides which other copies a blob
    /// that fails may be read from (prune's repack: [`Copies::Exactly`], that copy or an error).
    pub fn read_region_of(
        &self,
        locations: &[BlobLocation],
        copies: Copies,
        sealed: &mut Vec<u8>,
        out: &mut Vec<u8>,
        mut each: impl FnMut(usize, Result<&[u8], RepoError>),
    ) {
        let alone = |i: usize,
                     location: &BlobLocation,
                     sealed: &mut Vec<u8>,
                     out: &mut Vec<u8>,
                     each: &mut dyn FnMut(usize, Result<&[u8], RepoError>)| {
            let result = self.read_blob_into(location, copies, sealed, out);
            each(i, result.map(|()| &out[..]));
        };
        let Some(first) = locations.first() else { return };
        let same_pack = locations.iter().all(|l| l.pack == first.pack);
        let sorted = locations.windows(2).all(|w| w[0].entry.offset <= w[1].entry.offset);
        if locations.len() == 1 || !same_pack || !sorted {
            for (i, location) in locations.iter().enumerate() {
                alone(i, location, sealed, out, &mut each);
            }
            return;
        }
        let start = first.entry.offset as u64;
        let end = locations.iter().map(|l| bounds(l).1).max().unwrap_or(start);
        let cached = self.cached_pack_key(&first.pack);
        // A region near the start of the pack takes the header along: no request for the key.
        let from = if cached.is_none() && start <= HEADER_LEN as u64 + REGION_GAP { 0 } else { start };
        let key = self
            .store
            .read_range_into(&paths::pack(&first.pack), from, end - from, sealed)
            .map_err(RepoError::from)
            .and_then(|()| match cached {
                Some(key) => Ok(key),
                None if from == 0 => self.remember_pack_key(&first.pack, &sealed[..HEADER_LEN.min(sealed.len())]),
                None => self.pack_key(&first.pack),
            });
        let Ok(key) = key else {
            // Pack gone (prune), damaged, or the store failed: each blob on its own path.
            let mut scratch = Vec::new();
            for (i, location) in locations.iter().enumerate() {
                alone(i, location, &mut scratch, out, &mut each);
            }
            return;
        };
        let mut scratch = Vec::new();
        let mut i = 0;
        while i < locations.len() {
            let location = &locations[i];
            let (a, b) = bounds(location);
            let opened =
                self.open_sealed_blob(&key, location, &mut sealed[(a - from) as usize..(b - from) as usize], out);
            // The same blob listed twice (two files share it) is opened once: it was decrypted
            // in place, so its bytes in `sealed` are no longer the sealed box.
            let mut last = i;
            while last + 1 < locations.len() && locations[last + 1] == *location {
                last += 1;
            }
            match opened {
                Ok(()) => (i..=last).for_each(|j| each(j, Ok(&out[..]))),
                Err(_) => (i..=last).for_each(|j| alone(j, &locations[j], &mut scratch, out, &mut each)),
            }
            i = last + 1;
        }
    }

    /// The blobs of the same kind and pack as `location` within [`AROUND_MAX`] of it (it
    /// included), by offset: what a miss reads when neighbours are likely wanted next (the
    /// files and folders next to one in a backup are next to it in the pack).
    pub fn region_around(&self, location: &BlobLocation) -> Result<Vec<BlobLocation>, RepoError> {
        let (start, end) = bounds(location);
        let reach = AROUND_MAX.saturating_sub(end - start) / 2;
        let mut found = self.db().blobs_in_pack_range(&location.pack, start.saturating_sub(reach), end + reach)?;
        found.retain(|l| l.entry.kind == location.entry.kind && bounds(l).1 <= end + reach);
        if !found.contains(location) {
            found.push(*location);
            found.sort_by_key(|l| l.entry.offset);
        }
        Ok(found)
    }

    /// Loads a tree that is not in the local cache with the trees around it in its pack (one
    /// request for a region instead of one per folder), caching every one of them. Remote
    /// stores only: on a local folder a read per tree costs no round trip.
    pub(super) fn fetch_tree_region(&self, location: &BlobLocation) -> Result<Vec<u8>, RepoError> {
        let region = match self.region_around(location) {
            Ok(region) if region.len() > 1 && location.entry.kind == BlobKind::Tree => region,
            _ => return self.read_blob(location, Copies::Current),
        };
        let mut wanted = None;
        let mut others = Vec::new();
        let mut first_error = None;
        self.read_region(&region, &mut Vec::new(), &mut Vec::new(), |i, result| match result {
            Ok(bytes) if region[i] == *location => wanted = Some(bytes.to_vec()),
            Ok(bytes) => others.push((region[i].entry.id, bytes.to_vec())),
            Err(e) if region[i] == *location => first_error = Some(e),
            // A neighbour that does not open is only not cached; whoever needs it reports it.
            Err(_) => {}
        });
        if !others.is_empty() {
            self.db().store_trees(&others)?;
        }
        match (wanted, first_error) {
            (Some(bytes), _) => Ok(bytes),
            (None, Some(e)) => Err(e),
            (None, None) => self.read_blob(location, Copies::Current),
        }
    }

    fn cached_pack_key(&self, pack: &Id) -> Option<SymKey> {
        self.pack_keys.lock().unwrap_or_else(|p| p.into_inner()).get(pack).cloned()
    }

    /// Unwraps a pack's key from its header bytes and caches it, as [`Repository::pack_key`]
    /// does after reading them itself.
    fn remember_pack_key(&self, pack: &Id, header: &[u8]) -> Result<SymKey, RepoError> {
        let secret = self.require_full_key("reading backed-up data")?;
        let key = pack::open_pack_key(secret, header).map_err(RepoError::format(paths::pack(pack)))?;
        let mut cache = self.pack_keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= super::blobs::PACK_KEY_CACHE {
            cache.clear();
        }
        cache.insert(*pack, key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;
    use proptest::prelude::*;

    fn at(pack: u8, offset: u32, length: u32) -> BlobLocation {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&offset.to_le_bytes());
        id[4] = pack;
        BlobLocation {
            pack: Id([pack; 32]),
            entry: PackEntry { id: Id(id), kind: BlobKind::Data, offset, length, raw_len: length },
            domain: Id([0; 32]),
        }
    }

    #[test]
    fn neighbours_share_a_region_and_far_ones_do_not() {
        let items = vec![
            (at(1, 100, 1000), 'a'),
            (at(2, 100, 10), 'x'),
            (at(1, 1100, 1000), 'b'),
            (at(1, 2100 + REGION_GAP as u32 + 1, 10), 'c'),
        ];
        let regions = plan_regions(items, REGION_GAP, REGION_MAX);
        let tags: Vec<Vec<char>> = regions.iter().map(|r| r.iter().map(|(_, t)| *t).collect()).collect();
        assert_eq!(tags, vec![vec!['a', 'b'], vec!['c'], vec!['x']]);
    }

    proptest! {
        /// Every item comes out once; each region is one pack, in offset order, within `max`
        /// unless it is a single blob, and bridges no gap wider than `gap`.
        #[test]
        fn regions_cover_everything_within_bounds(
            blobs in proptest::collection::vec((0u8..3, 0u32..50_000_000, 1u32..5_000_000), 0..200),
            gap in 0u64..1_000_000,
            max in 1u64..20_000_000,
        ) {
            let items: Vec<(BlobLocation, usize)> =
                blobs.iter().enumerate().map(|(i, &(p, o, l))| (at(p, o, l), i)).collect();
            let regions = plan_regions(items, gap, max);
            let mut seen: Vec<usize> = regions.iter().flatten().map(|(_, i)| *i).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..blobs.len()).collect::<Vec<_>>());
            for region in &regions {
                prop_assert!(region.iter().all(|(l, _)| l.pack == region[0].0.pack));
                prop_assert!(region.windows(2).all(|w| w[0].0.entry.offset <= w[1].0.entry.offset));
                let start = bounds(&region[0].0).0;
                let end = region.iter().map(|(l, _)| bounds(l).1).max().unwrap();
                prop_assert!(region.len() == 1 || end - start <= max);
                let mut reach = bounds(&region[0].0).1;
                for (l, _) in &region[1..] {
                    prop_assert!(bounds(l).0 <= reach + gap);
                    reach = reach.max(bounds(l).1);
                }
            }
        }
    }
}
