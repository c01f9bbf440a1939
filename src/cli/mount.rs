//! `coffer mount`: every snapshot as a read-only folder, in the foreground until unmounted.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::shared_args::GlobalArgs;
use super::{exit, open_repo};

pub fn run(global: &GlobalArgs, mountpoint: &Path, cache_size: u64, allow_other: bool) -> Result<u8> {
    let repo = open_repo(global)?;
    let source = coffer::vfs::RepoSource::new(Arc::clone(&repo))?;
    let options = coffer_mount::MountOptions {
        allow_other,
        // The budget covers blocks being fetched and decrypted too, not only cached ones.
        cache_bytes: cache_size - (cache_size / 4).min(64 << 20),
        fs_name: format!("coffer:{}", repo.id().short()),
        on_mounted: (!global.quiet).then_some(announce_mount as fn(&std::path::Path)),
        ..Default::default()
    };
    coffer_mount::mount_foreground(source, mountpoint, &options)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    Ok(exit::OK)
}

fn announce_mount(mountpoint: &std::path::Path) {
    eprintln!("mounted at {}; Ctrl-C or `fusermount3 -u {0}` unmounts", mountpoint.display());
}
