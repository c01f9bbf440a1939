//! Reads a large file with `O_DIRECT`: the disk writes straight into one reused, aligned
//! buffer instead of into the page cache, from which `read` would copy. On this kind of
//! virtual machine that kernel copy out of freshly filled cache pages cost up to a third of a
//! large file's backup time; it also leaves the cache (the user's working set) alone.
//! Filesystems without `O_DIRECT` (tmpfs, some FUSE) and reads it refuses (a file that grew
//! to an unaligned length) fall back to ordinary reads of the same file.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;

/// Bytes per direct read: large enough that the disk streams without readahead.
const BLOCK: usize = 1 << 20;
/// Direct reads need buffer, offset and length aligned to the device's logical block size;
/// a page covers every device in use.
const ALIGN: usize = 4096;

pub struct DirectReader<'a> {
    file: &'a File,
    direct: bool,
    /// `BLOCK` aligned bytes start at `base`.
    buf: Vec<u8>,
    base: usize,
    /// Unread bytes are `buf[base + pos..base + end]`.
    pos: usize,
    end: usize,
}

impl<'a> DirectReader<'a> {
    /// `direct`: whether `file` was opened with `O_DIRECT`; if not, reads go straight through.
    pub fn new(file: &'a File, direct: bool) -> DirectReader<'a> {
        let buf = if direct { vec![0u8; BLOCK + ALIGN] } else { Vec::new() };
        let base = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        DirectReader { file, direct, buf, base, pos: 0, end: 0 }
    }

    /// Turns `O_DIRECT` off for the rest of the file.
    fn stop_direct(&mut self) -> std::io::Result<()> {
        let fd = self.file.as_raw_fd();
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_DIRECT;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
        self.direct = false;
        Ok(())
    }
}

impl Read for DirectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.end {
            if !self.direct {
                return self.file.read(out);
            }
            match self.file.read(&mut self.buf[self.base..self.base + BLOCK]) {
                Ok(n) => (self.pos, self.end) = (0, n),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.stop_direct()?;
                    return self.file.read(out);
                }
                Err(e) => return Err(e),
            }
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.base + self.pos..self.base + self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn reads_every_byte_directly_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, ALIGN - 1, ALIGN, BLOCK - 3, BLOCK, 3 * BLOCK + 12345] {
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, content(len)).unwrap();
            for direct in [true, false] {
                let opened = if direct {
                    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path)
                } else {
                    File::open(&path)
                };
                // tmpfs has no O_DIRECT: then only the plain path is tested here.
                let Ok(file) = opened else { continue };
                let mut got = Vec::new();
                let mut reader = DirectReader::new(&file, direct);
                let mut piece = vec![0u8; 300_001];
                loop {
                    let n = reader.read(&mut piece).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&piece[..n]);
                }
                assert_eq!(got, content(len), "len {len}, direct {direct}");
            }
        }
    }

    #[test]
    fn a_file_growing_to_an_unaligned_length_is_still_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing");
        std::fs::write(&path, content(ALIGN + 10)).unwrap();
        let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) else {
            return; // no O_DIRECT on this filesystem
        };
        let mut reader = DirectReader::new(&file, true);
        let mut got = vec![0u8; ALIGN + 10];
        reader.read_exact(&mut got).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"tail").unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        got.extend_from_slice(&rest);
        let mut want = content(ALIGN + 10);
        want.extend_from_slice(b"tail");
        assert_eq!(got, want);
    }
}
