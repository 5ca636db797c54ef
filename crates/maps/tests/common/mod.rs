//! Set-up shared by the user-engine map test binaries: a private pin root per test.

use std::path::PathBuf;

use bpfmaps_maps::Store;

/// A registry (pin root) of its own for one test, under the temporary directory, named after the
/// suite, the test and the process id so that parallel tests and runs never share it. Removed on
/// drop.
pub struct TestStore {
    /// The registry the test creates its maps in.
    pub store: Store,
    /// The pin root directory.
    pub dir: PathBuf,
}

impl TestStore {
    /// A fresh, empty pin root `bpfmaps-{suite}-{tag}-{pid}`.
    pub fn new(suite: &str, tag: &str) -> TestStore {
        let dir =
            std::env::temp_dir().join(format!("bpfmaps-{suite}-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TestStore {
            store: Store::open(&dir).expect("open a test pin root"),
            dir,
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
