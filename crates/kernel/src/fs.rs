//! The pseudo filesystems the kernel engine needs: bpffs (pins) at `/sys/fs/bpf` and tracefs
//! (tracepoint ids) at `/sys/kernel/tracing`, mounted on demand as bpftool does, and telling a
//! kernel pin (a path on bpffs) from anything else.
//!
//! It does not create, open or remove pins; that is `map.rs` (`BPF_OBJ_PIN` / `BPF_OBJ_GET`).

use std::path::Path;

use bpfmaps_abi::Errno;

use crate::error::Error;
use crate::sys;

/// `BPF_FS_MAGIC`: `statfs().f_type` of bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `TRACEFS_MAGIC`: `statfs().f_type` of tracefs.
pub const TRACEFS_MAGIC: i64 = 0x7472_6163;
/// Where bpffs is mounted.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
/// Where tracefs is mounted.
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";

fn ensure_mounted(target: &str, fstype: &str, magic: i64, options: &str) -> Result<(), Error> {
    let path = Path::new(target);
    if sys::statfs_type(path).ok() == Some(magic) {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    match sys::mount_pseudo(fstype, path, options) {
        Ok(()) => Ok(()),
        // Another process mounted it between our check and our mount.
        Err(e) if e.errno == Errno::EBUSY && sys::statfs_type(path).ok() == Some(magic) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mounts bpffs at `/sys/fs/bpf` unless it is already there (mode 0700, as bpftool does).
pub fn ensure_bpffs() -> Result<(), Error> {
    ensure_mounted(BPFFS_PATH, "bpf", BPF_FS_MAGIC, "mode=0700")
}

/// Mounts tracefs at `/sys/kernel/tracing` unless it is already there.
pub fn ensure_tracefs() -> Result<(), Error> {
    ensure_mounted(TRACEFS_PATH, "tracefs", TRACEFS_MAGIC, "")
}

/// True when `path` is on a bpffs mount. A path that does not exist yet (a pin about to be made)
/// is judged by its nearest existing ancestor directory.
pub fn is_on_bpffs(path: &Path) -> bool {
    let mut current = Some(path);
    while let Some(p) = current {
        let probe = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        match sys::statfs_type(probe) {
            Ok(magic) => return magic == BPF_FS_MAGIC,
            Err(e) if e.errno == Errno::ENOENT => current = p.parent(),
            Err(_) => return false,
        }
    }
    false
}
