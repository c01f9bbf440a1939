//! Reads a large file with `O_DIRECT`: the disk writes straight into reused, aligned buffers
//! instead of into the page cache, from which `read` would copy. On this kind of virtual
//! machine that kernel copy out of freshly filled cache pages cost up to a third of a large
//! file's backup time; it also leaves the cache (the user's working set) alone.
//!
//! Direct reads wait for the disk and the kernel reads nothing ahead of them, so a thread of
//! their own reads a few blocks ahead: the reader thread, which chunks and hashes, never
//! waits for the disk while there is data to cut, and the compressing workers are fed
//! steadily.
//!
//! Filesystems without `O_DIRECT` (tmpfs, some FUSE) and reads it refuses (a file that grew
//! to an unaligned length) fall back to ordinary reads of the same file.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Bytes per direct read: large enough that the disk streams without readahead.
const BLOCK: usize = 1 << 20;
/// Direct reads need buffer, offset and length aligned to the device's logical block size;
/// a page covers every device in use.
const ALIGN: usize = 4096;
/// Blocks in flight between the read-ahead thread and the reader: one being cut, the rest
/// read ahead.
const BLOCKS: usize = 3;

struct Block {
    buf: Vec<u8>,
    /// The aligned bytes start here.
    base: usize,
    len: usize,
}

enum Filled {
    Data(Block),
    End,
    /// The kernel refused a direct read; the rest of the file is read the ordinary way.
    Refused,
    Failed(std::io::Error),
}

/// The reader's ends of the read-ahead thread's channels.
struct Ahead {
    filled: Receiver<Filled>,
    empty: Sender<Vec<u8>>,
}

pub struct DirectReader<'a> {
    file: &'a File,
    /// `None` when reading the ordinary way, and after the end.
    ahead: Option<Ahead>,
    current: Option<Block>,
    /// Bytes of `current` already returned.
    pos: usize,
    /// File offset of the next byte to return.
    offset: u64,
    ended: bool,
}

impl<'a> DirectReader<'a> {
    /// `direct`: whether `file` was opened with `O_DIRECT`. If so, a thread of `scope` reads
    /// ahead; if not (or if no thread can be started), reads go straight through.
    pub fn new<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, file: &'a File, direct: bool) -> DirectReader<'a>
    where
        'a: 'scope,
    {
        let mut reader = DirectReader { file, ahead: None, current: None, pos: 0, offset: 0, ended: false };
        if !direct {
            return reader;
        }
        let (filled_tx, filled) = bounded(BLOCKS);
        let (empty, empty_rx) = bounded(BLOCKS);
        for _ in 0..BLOCKS {
            // Never full: the channel holds exactly these.
            let _ = empty.send(vec![0u8; BLOCK + ALIGN]);
        }
        let started = std::thread::Builder::new()
            .name("coffer-readahead".into())
            .spawn_scoped(scope, move || read_ahead(file, filled_tx, empty_rx));
        match started {
            Ok(_) => reader.ahead = Some(Ahead { filled, empty }),
            // Without the thread, the ordinary reads below still read everything.
            Err(_) => {
                let _ = stop_direct(file);
            }
        }
        reader
    }
}

/// Reads the file block by block into the buffers it is given back, until the end, an
/// error, or the reader hanging up.
fn read_ahead(file: &File, filled: Sender<Filled>, empty: Receiver<Vec<u8>>) {
    let mut offset = 0u64;
    for mut buf in empty {
        let base = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let result = loop {
            match file.read_at(&mut buf[base..base + BLOCK], offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let (message, last) = match result {
            Ok(0) => (Filled::End, true),
            Ok(len) => {
                offset += len as u64;
                (Filled::Data(Block { buf, base, len }), false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (Filled::Refused, true),
            Err(e) => (Filled::Failed(e), true),
        };
        if filled.send(message).is_err() || last {
            return;
        }
    }
}

/// Turns `O_DIRECT` off for the rest of the file.
fn stop_direct(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_DIRECT;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

impl Read for DirectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(block) = &self.current {
                if self.pos < block.len {
                    let n = out.len().min(block.len - self.pos);
                    out[..n].copy_from_slice(&block.buf[block.base + self.pos..block.base + self.pos + n]);
                    self.pos += n;
                    self.offset += n as u64;
                    return Ok(n);
                }
            }
            if let Some(done) = self.current.take() {
                if let Some(ahead) = &self.ahead {
                    // Fails only once the thread has stopped; the buffer is then not needed.
                    let _ = ahead.empty.send(done.buf);
                }
            }
            if self.ended {
                return Ok(0);
            }
            let Some(ahead) = &self.ahead else {
                let n = self.file.read_at(out, self.offset)?;
                self.offset += n as u64;
                return Ok(n);
            };
            match ahead.filled.recv() {
                Ok(Filled::Data(block)) => {
                    self.current = Some(block);
                    self.pos = 0;
                }
                Ok(Filled::End) => {
                    self.ahead = None;
                    self.ended = true;
                }
                Ok(Filled::Refused) => {
                    self.ahead = None;
                    stop_direct(self.file)?;
                }
                Ok(Filled::Failed(e)) => {
                    self.ahead = None;
                    return Err(e);
                }
                Err(_) => return Err(std::io::Error::other("the read-ahead thread stopped")),
            }
        }
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
        for len in [0, 1, ALIGN - 1, ALIGN, BLOCK - 3, BLOCK, 3 * BLOCK + 12345, 7 * BLOCK] {
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
                let got = std::thread::scope(|scope| {
                    let mut got = Vec::new();
                    let mut reader = DirectReader::new(scope, &file, direct);
                    let mut piece = vec![0u8; 300_001];
                    loop {
                        let n = reader.read(&mut piece).unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&piece[..n]);
                    }
                    got
                });
                assert_eq!(got, content(len), "len {len}, direct {direct}");
            }
        }
    }

    #[test]
    fn a_file_growing_to_an_unaligned_length_is_still_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing");
        let len = 2 * BLOCK + 10;
        std::fs::write(&path, content(len)).unwrap();
        let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) else {
            return; // no O_DIRECT on this filesystem
        };
        let got = std::thread::scope(|scope| {
            let mut reader = DirectReader::new(scope, &file, true);
            // Let the thread fill its buffers: two full blocks, then the 10-byte end. Its next
            // read, at an unaligned offset now inside the file, is refused, and the rest is
            // read the ordinary way. (Had it not got that far, it reads the tail directly.)
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"tail").unwrap();
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        let mut want = content(len);
        want.extend_from_slice(b"tail");
        assert!(got == want, "read {} bytes, want {}", got.len(), want.len());
    }

    #[test]
    fn a_reader_dropped_early_lets_its_thread_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, content(8 * BLOCK)).unwrap();
        let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) else {
            return;
        };
        // The scope joins the read-ahead thread: this returns only if it stopped.
        std::thread::scope(|scope| {
            let mut reader = DirectReader::new(scope, &file, true);
            let mut first = vec![0u8; 100];
            reader.read_exact(&mut first).unwrap();
            assert_eq!(first, content(100));
        });
    }
}
