//! Every chunk address of a dataset in one walk of its chunk index, read from the file itself.
//!
//! HDF5 1.10 answers `H5Dget_chunk_info_by_coord` by scanning the dataset's chunk index from
//! the start on every call (about 20 ns a chunk, under the library's process-wide lock): on a
//! 2,000-frame shard that is ~100 us per random features read, and it is the one serial part
//! left in the loader. Files written with the default (earliest) format bounds, as
//! `regionfeat extract` writes them, keep that index as a version-1 B-tree, described in the
//! HDF5 file format specification (sections III.A.1 "B-trees" and IV.A.2.i "Data Layout"). This
//! module reads that tree with `pread`, outside the lock, once per dataset.
//!
//! Anything else — a version-2 object header, a version-4 layout (other index types), 4-byte
//! addresses, a node that does not parse — gives `None` and the caller keeps asking HDF5 chunk
//! by chunk, so a file this module does not understand is slower, never misread.

use std::fs::File;
use std::os::unix::fs::FileExt;

use hdf5::Dataset;
use hdf5_sys::h5::HADDR_UNDEF;
use hdf5_sys::h5o::{H5O_info1_t, H5Oget_info2, H5O_INFO_BASIC};

/// One stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkEntry {
    /// Offset of the chunk along the first (row) axis.
    pub row: u64,
    /// File address of its stored bytes.
    pub addr: u64,
    /// Stored (filtered) size in bytes.
    pub size: u32,
    /// Filters skipped for this chunk (bit i: filter i).
    pub mask: u32,
}

/// The stored chunks of one dataset, in index order.
#[derive(Debug)]
pub(super) struct ChunkIndex {
    pub entries: Vec<ChunkEntry>,
    /// Levels of the B-tree (1: the root is a leaf); read by the tests, which must see
    /// internal nodes walked.
    #[cfg_attr(not(test), allow(dead_code))]
    pub levels: u8,
}

const MSG_LAYOUT: u16 = 0x0008;
const MSG_CONTINUATION: u16 = 0x0010;
/// Bounds against a corrupt file sending the walk in circles.
const MAX_HEADER_BLOCKS: usize = 64;
const MAX_LEVELS: u8 = 32;

/// File address of a dataset's object header.
pub(super) fn header_address(ds: &Dataset) -> Option<u64> {
    // SAFETY: `info` is a plain C struct that HDF5 fills; only its address is read.
    let mut info: H5O_info1_t = unsafe { std::mem::zeroed() };
    let rc = hdf5::sync::sync(|| unsafe { H5Oget_info2(ds.id(), &mut info, H5O_INFO_BASIC) });
    (rc >= 0 && info.addr != HADDR_UNDEF).then_some(info.addr)
}

/// Reads the chunk index of the dataset whose object header is at `header` (a file address).
/// `rank` is the dataset's rank; `chunk_rows` and `rows` bound what a valid entry may say.
pub(super) fn read(
    file: &File,
    header: u64,
    rank: usize,
    chunk_rows: u64,
    rows: u64,
) -> Option<ChunkIndex> {
    // Superblock versions 0/1 keep the sizes of offsets and lengths at bytes 13/14, 2/3 at 9/10.
    let sb = bytes(file, 0, 16)?;
    if &sb[..8] != b"\x89HDF\r\n\x1a\n" {
        return None;
    }
    let (offsets, lengths) = match sb[8] {
        0 | 1 => (sb[13], sb[14]),
        2 | 3 => (sb[9], sb[10]),
        _ => return None,
    };
    if (offsets, lengths) != (8, 8) {
        return None;
    }
    let (root, dims) = layout_btree(file, header)?;
    // Chunked layouts store rank + 1 dimensions (the last is the element size).
    if dims != rank + 1 || root == HADDR_UNDEF {
        return None;
    }
    let mut walk = Walk {
        file,
        dims,
        chunk_rows,
        rows,
        entries: vec![],
        budget: rows.div_ceil(chunk_rows.max(1)) as usize * 2 + 16,
    };
    let levels = walk.node(root, None)? + 1;
    Some(ChunkIndex {
        entries: walk.entries,
        levels,
    })
}

/// `n` bytes of `file` at `at`.
fn bytes(file: &File, at: u64, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0; n];
    file.read_exact_at(&mut b, at).ok()?;
    Some(b)
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// The B-tree address and dimensionality from a version-1 object header's version-3
/// chunked layout message (following continuation blocks).
fn layout_btree(file: &File, header: u64) -> Option<(u64, usize)> {
    // Version-1 prefix: version, reserved, message count (2), reference count (4), size of
    // the first message block (4), padding to 16 bytes.
    let prefix = bytes(file, header, 16)?;
    if prefix[0] != 1 {
        return None;
    }
    let first = u32_at(&prefix, 8)? as usize;
    let mut blocks = vec![(header + 16, first)];
    let mut seen = 0;
    while let Some((at, len)) = blocks.pop() {
        seen += 1;
        if seen > MAX_HEADER_BLOCKS || len > 1 << 20 {
            return None;
        }
        let block = bytes(file, at, len)?;
        // Messages: type (2), size (2), flags (1), reserved (3), then `size` bytes.
        let mut i = 0;
        while i + 8 <= block.len() {
            let (kind, size) = (u16_at(&block, i)?, u16_at(&block, i + 2)? as usize);
            let body = block.get(i + 8..i + 8 + size)?;
            match kind {
                MSG_LAYOUT => {
                    // Version 3, class 2 (chunked): dimensionality (1), B-tree address (8).
                    if body.len() < 11 || body[0] != 3 || body[1] != 2 {
                        return None;
                    }
                    return Some((u64_at(body, 3)?, body[2] as usize));
                }
                MSG_CONTINUATION => blocks.push((u64_at(body, 0)?, u64_at(body, 8)? as usize)),
                _ => {}
            }
            i += 8 + size;
        }
    }
    None
}

struct Walk<'a> {
    file: &'a File,
    dims: usize,
    chunk_rows: u64,
    rows: u64,
    entries: Vec<ChunkEntry>,
    /// Nodes plus entries still allowed.
    budget: usize,
}

impl Walk<'_> {
    /// Appends the chunks under the node at `addr`; returns its level. `expect` is the level
    /// its parent implies.
    fn node(&mut self, addr: u64, expect: Option<u8>) -> Option<u8> {
        self.budget = self.budget.checked_sub(1)?;
        // "TREE", node type (1 = raw data chunks), level, entries used (2), two siblings (16).
        let head = bytes(self.file, addr, 24)?;
        if &head[..4] != b"TREE" || head[4] != 1 {
            return None;
        }
        let level = head[5];
        if level >= MAX_LEVELS || expect.is_some_and(|e| e != level) {
            return None;
        }
        let used = u16_at(&head, 6)? as usize;
        // Key: chunk size (4), filter mask (4), one 8-byte offset per dimension.
        let key = 8 + 8 * self.dims;
        let body = bytes(self.file, addr + 24, used * (key + 8) + key)?;
        for e in 0..used {
            let k = &body[e * (key + 8)..];
            let child = u64_at(k, key)?;
            if level > 0 {
                self.node(child, Some(level - 1))?;
                continue;
            }
            self.budget = self.budget.checked_sub(1)?;
            let (size, mask, row) = (u32_at(k, 0)?, u32_at(k, 4)?, u64_at(k, 8)?);
            // Chunks split only the row axis: every other offset is 0.
            let others_zero = (1..self.dims).all(|d| u64_at(k, 8 + 8 * d) == Some(0));
            if !others_zero
                || row % self.chunk_rows != 0
                || row >= self.rows
                || child == HADDR_UNDEF
                || size == 0
            {
                return None;
            }
            self.entries.push(ChunkEntry {
                row,
                addr: child,
                size,
                mask,
            });
        }
        Some(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdf5::filters::Filter;

    /// A `[rows, 3]` u32 dataset chunked by `chunk` rows with shuffle + deflate, in a file
    /// written with the default (earliest) or the latest format bounds.
    fn dataset(
        dir: &std::path::Path,
        latest: bool,
        rows: usize,
        chunk: usize,
    ) -> (std::path::PathBuf, Vec<u64>) {
        let path = dir.join(if latest { "latest.h5" } else { "earliest.h5" });
        let file = if latest {
            hdf5::File::with_options()
                .with_fapl(|p| p.libver_latest())
                .create(&path)
                .unwrap()
        } else {
            hdf5::File::create(&path).unwrap()
        };
        let data: Vec<u32> = (0..rows as u32 * 3).collect();
        let ds = file
            .new_dataset::<u32>()
            .shape([rows, 3])
            .chunk([chunk, 3])
            .set_filters(&[Filter::shuffle(), Filter::deflate(4)])
            .create("x")
            .unwrap();
        ds.write_raw(&data).unwrap();
        // What HDF5 says, chunk by chunk.
        let addrs = (0..rows.div_ceil(chunk))
            .map(|c| {
                let (mut mask, mut addr, mut size) = (0, 0, 0);
                let coord = [(c * chunk) as u64, 0];
                let rc = hdf5::sync::sync(|| unsafe {
                    hdf5_sys::h5d::H5Dget_chunk_info_by_coord(
                        ds.id(),
                        coord.as_ptr(),
                        &mut mask,
                        &mut addr,
                        &mut size,
                    )
                });
                assert!(rc >= 0);
                addr
            })
            .collect();
        (path, addrs)
    }

    fn index_of(path: &std::path::Path, rows: usize, chunk: usize) -> Option<ChunkIndex> {
        let file = hdf5::File::open(path).unwrap();
        let ds = file.dataset("x").unwrap();
        let header = header_address(&ds).unwrap();
        read(
            &File::open(path).unwrap(),
            header,
            2,
            chunk as u64,
            rows as u64,
        )
    }

    #[test]
    fn a_two_level_tree_gives_every_chunk_where_hdf5_says() {
        let dir = tempfile::tempdir().unwrap();
        // 300 chunks: more than one 64-entry leaf, so the root is an internal node.
        let (path, addrs) = dataset(dir.path(), false, 1500, 5);
        let index = index_of(&path, 1500, 5).expect("the v1 B-tree parses");
        assert!(index.levels >= 2, "levels {}", index.levels);
        let mut got: Vec<(u64, u64)> = index.entries.iter().map(|e| (e.row, e.addr)).collect();
        got.sort();
        let want: Vec<(u64, u64)> = addrs
            .iter()
            .enumerate()
            .map(|(c, &a)| (c as u64 * 5, a))
            .collect();
        assert_eq!(got, want);
        assert!(index.entries.iter().all(|e| e.mask == 0 && e.size > 0));
    }

    #[test]
    fn other_index_types_and_a_damaged_tree_give_none() {
        let dir = tempfile::tempdir().unwrap();
        // Latest format bounds: a version-2 object header and another index type.
        let (latest, _) = dataset(dir.path(), true, 100, 10);
        assert!(index_of(&latest, 100, 10).is_none());
        // A damaged node signature: no index rather than a wrong one.
        let (path, addrs) = dataset(dir.path(), false, 100, 10);
        assert_eq!(index_of(&path, 100, 10).unwrap().entries.len(), addrs.len());
        let bytes = std::fs::read(&path).unwrap();
        let header = {
            let f = hdf5::File::open(&path).unwrap();
            header_address(&f.dataset("x").unwrap()).unwrap()
        };
        let (root, dims) = layout_btree(&File::open(&path).unwrap(), header).unwrap();
        assert_eq!(dims, 3);
        let at = root as usize;
        assert_eq!(&bytes[at..at + 4], b"TREE");
        let mut damaged = bytes.clone();
        damaged[at..at + 4].copy_from_slice(b"EERT");
        std::fs::write(&path, &damaged).unwrap();
        std::fs::write(dir.path().join("ok.h5"), &bytes).unwrap();
        assert!(read(&File::open(&path).unwrap(), header, 2, 10, 100).is_none());
        // Rows bound entries: an index that names a chunk past the end is refused.
        assert!(read(
            &File::open(dir.path().join("ok.h5")).unwrap(),
            header,
            2,
            10,
            50
        )
        .is_none());
    }
}
