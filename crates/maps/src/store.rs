//! The pin root and the id registry of user-engine maps: where pins live, how ids are given out,
//! how every live map is listed, and when an unpinned map disappears.
//!
//! # On disk
//!
//! * The pin root is `$BPFMAPS_PIN_ROOT`, else `/run/bpfmaps` for root, else
//!   `$XDG_RUNTIME_DIR/bpfmaps` (else `/tmp/bpfmaps-<uid>`); created mode 0700 when missing.
//! * Every live map — pinned or not — has exactly one registry entry `<root>/.ids/<id>`: a hard
//!   link to the map file itself. Ids are allocated by creating that link with `linkat`, which fails
//!   with `EEXIST` when the id is taken, so allocation needs no lock and survives crashes. The id is
//!   the lowest free number above the highest live id (ids of maps that went away are reused only
//!   once every higher id is gone; the kernel's cyclic ids are not reproduced).
//! * A pin is one more hard link to the file, anywhere on the pin root's file system.
//!
//! # Lifetime ("refcount")
//!
//! A process that has a map open holds a shared `flock` on its open file. A map is *alive* while
//! it has a pin (link count > 1: the registry entry plus pins) or some process holds it open (its
//! flock). When neither holds — checked by taking an exclusive `flock` without blocking and
//! reading the link count — the registry entry is removed and the file's storage is freed by the
//! kernel when the last descriptor closes. That check runs when a handle is dropped (so an unpinned
//! map disappears when its last user in any process closes it, like a kernel map whose last fd is
//! closed) and on every [`Store::live_ids`] and [`Store::open_id`] (so maps of crashed processes are
//! collected, since the kernel releases a dead process's flocks). An opener that races with the
//! collector sees a link count of 0 after taking its shared lock and reports the map as gone.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::lock::{flock_shared, try_flock_exclusive};
use crate::region::{effective_uid, link_file};

/// The environment variable that overrides the pin root.
pub const PIN_ROOT_ENV: &str = "BPFMAPS_PIN_ROOT";

/// Name of the registry directory under the pin root.
const REGISTRY_DIR: &str = ".ids";

/// Errors of the pin root and registry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {}: {}", path.display(), crate::errno_text(source))]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The default pin root (see the module docs); not created by this call.
pub fn pin_root() -> PathBuf {
    if let Some(root) = std::env::var_os(PIN_ROOT_ENV).filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let uid = effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/bpfmaps");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("bpfmaps"),
        None => PathBuf::from(format!("/tmp/bpfmaps-{uid}")),
    }
}

/// A pin root with its id registry.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root`, creating the root and its registry directory (mode 0700) if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        let registry = root.join(REGISTRY_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&registry)
            .map_err(io_err("create directory", &registry))?;
        Ok(Store { root })
    }

    /// The store at [`pin_root`].
    pub fn default_root() -> Result<Store, StoreError> {
        Store::open(pin_root())
    }

    /// The pin root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn registry(&self) -> PathBuf {
        self.root.join(REGISTRY_DIR)
    }

    /// The registry entry path of map `id`.
    pub fn entry_path(&self, id: u32) -> PathBuf {
        self.registry().join(id.to_string())
    }

    /// Ids with a registry entry, ascending (without liveness checks).
    fn entry_ids(&self) -> Result<Vec<u32>, StoreError> {
        let dir = self.registry();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                if id != 0 {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Gives `file` (an open map file, possibly unnamed) an id by linking it into the registry,
    /// and takes this process's shared liveness lock on it. Returns the id.
    pub fn register(&self, file: &File) -> Result<u32, StoreError> {
        flock_shared(file).map_err(io_err("flock", &self.registry()))?;
        let mut id = self
            .entry_ids()?
            .last()
            .copied()
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        loop {
            let path = self.entry_path(id);
            match link_file(file, &path) {
                Ok(()) => return Ok(id),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    id = id.wrapping_add(1).max(1);
                }
                Err(e) => {
                    return Err(StoreError::Io {
                        op: "link",
                        path,
                        source: e,
                    })
                }
            }
        }
    }

    /// Opens map `id` and takes the shared liveness lock; `None` when no live map has that id.
    pub fn open_id(&self, id: u32) -> Result<Option<File>, StoreError> {
        let path = self.entry_path(id);
        let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    source: e,
                })
            }
        };
        if self.collect_if_dead(&file, &path)? {
            return Ok(None);
        }
        flock_shared(&file).map_err(io_err("flock", &path))?;
        let links = file.metadata().map_err(io_err("stat", &path))?.nlink();
        if links == 0 {
            return Ok(None);
        }
        Ok(Some(file))
    }

    /// Removes the registry entry of the map open as `file` when nothing keeps it alive (no pin,
    /// no other holder of the liveness lock). Returns true when it was removed. Leaves `file`
    /// without a liveness lock when it returns true.
    pub fn collect_if_dead(&self, file: &File, entry: &Path) -> Result<bool, StoreError> {
        if !try_flock_exclusive(file).map_err(io_err("flock", entry))? {
            return Ok(false);
        }
        let links = file.metadata().map_err(io_err("stat", entry))?.nlink();
        if links <= 1 {
            match fs::remove_file(entry) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                Err(e) => {
                    return Err(StoreError::Io {
                        op: "unlink",
                        path: entry.to_owned(),
                        source: e,
                    })
                }
            }
        }
        // Alive through a pin: drop back to the shared lock.
        flock_shared(file).map_err(io_err("flock", entry))?;
        Ok(false)
    }

    /// Every live map's id and registry entry path, ascending by id; collects dead entries on
    /// the way.
    pub fn live_ids(&self) -> Result<Vec<u32>, StoreError> {
        let mut live = Vec::new();
        for id in self.entry_ids()? {
            let path = self.entry_path(id);
            let file = match fs::OpenOptions::new().read(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StoreError::Io {
                        op: "open",
                        path,
                        source: e,
                    })
                }
            };
            if !self.collect_if_dead(&file, &path)? {
                live.push(id);
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::create_unnamed_file;

    #[test]
    fn ids_are_allocated_and_collected_when_the_last_holder_goes() {
        let dir = std::env::temp_dir().join(format!("bpfmaps-store-unit-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let a = create_unnamed_file(store.root(), 4096).unwrap();
        let b = create_unnamed_file(store.root(), 4096).unwrap();
        let id_a = store.register(&a).unwrap();
        let id_b = store.register(&b).unwrap();
        assert_eq!(id_b, id_a + 1);
        assert_eq!(store.live_ids().unwrap(), vec![id_a, id_b]);
        drop(a);
        assert_eq!(store.live_ids().unwrap(), vec![id_b]);
        assert!(store.open_id(id_a).unwrap().is_none());
        let again = store.open_id(id_b).unwrap().unwrap();
        drop(b);
        assert_eq!(store.live_ids().unwrap(), vec![id_b]);
        drop(again);
        assert_eq!(store.live_ids().unwrap(), Vec::<u32>::new());
        fs::remove_dir_all(&dir).unwrap();
    }
}
