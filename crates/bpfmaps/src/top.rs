//! The per-process openat(2) counter behind `bpfmaps top`: the `openat_counter` program attached
//! to `syscalls:sys_enter_openat`, and the sampling of its `counts` and `comms` maps into rows of
//! PID, COMM, total opens and rate.
//!
//! Totals are kept in the kernel map while a process lives. When a sample finds a process gone
//! from `/proc`, it takes its final count with lookup-and-delete (so no open that happened before
//! the exit is lost) and drops it from the map, which keeps the 10240-entry map from filling up on
//! a busy machine.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bpfmaps_abi::{Errno, MapError, MapOps};
use bpfmaps_kernel::attach::{AttachError, Attachment};
use bpfmaps_kernel::map::KernelMap;
use bpfmaps_kernel::object::{KernelObject, LoadConfig, ObjectError};

/// The compiled `bpf/openat_counter.bpf.c`.
pub const OPENAT_COUNTER_OBJECT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../bpf/obj/openat_counter.bpf.o"
));

/// Why the counter could not start or sample.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// Loading the program failed.
    #[error("loading openat_counter: {0}")]
    Load(#[from] ObjectError),
    /// Attaching it to the tracepoint failed.
    #[error("attaching openat_counter: {0}")]
    Attach(#[from] AttachError),
    /// Reading its maps failed.
    #[error("reading the {map} map: {error}")]
    Map {
        /// Which map.
        map: &'static str,
        /// Why.
        error: MapError,
    },
}

/// One process in a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    /// The process id (tgid).
    pub pid: u32,
    /// Its command name, as the program saw it at its last openat.
    pub comm: String,
    /// openat calls since the counter started.
    pub opens: u64,
    /// openat calls since the previous sample.
    pub delta: u64,
    /// `delta` per second of the sampling interval.
    pub rate: f64,
    /// True when the process has exited (this is its last row).
    pub exited: bool,
}

/// Which processes to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopConfig {
    /// Count only this process (tgid); `None` counts every process.
    pub target_tgid: Option<u32>,
}

/// The loaded, attached counter.
pub struct OpenatCounter {
    // Declared first so the links are dropped (detached) before the object.
    _links: Vec<Attachment>,
    _object: KernelObject,
    counts: KernelMap,
    comms: KernelMap,
    previous: HashMap<u32, u64>,
    last_sample: Instant,
}

impl OpenatCounter {
    /// Loads and attaches the counter.
    pub fn start(config: TopConfig) -> Result<OpenatCounter, TopError> {
        let load = LoadConfig::default().with_target_tgid(config.target_tgid.unwrap_or(0));
        let mut object = KernelObject::load_bytes(OPENAT_COUNTER_OBJECT, &load)?;
        let counts = object.map("counts")?;
        let comms = object.map("comms")?;
        let links = object.attach_all()?;
        Ok(OpenatCounter {
            _links: links,
            _object: object,
            counts,
            comms,
            previous: HashMap::new(),
            last_sample: Instant::now(),
        })
    }

    /// The `counts` map (pid → u64).
    pub fn counts_map(&self) -> &KernelMap {
        &self.counts
    }

    /// Reads every process's count, sorted by rate, then total, then pid.
    pub fn sample(&mut self) -> Result<Vec<ProcessRow>, TopError> {
        let now = Instant::now();
        let secs = now.duration_since(self.last_sample).as_secs_f64().max(1e-9);
        self.last_sample = now;
        let map_err = |map| move |error| TopError::Map { map, error };

        let mut rows = Vec::new();
        let mut key: Option<[u8; 4]> = None;
        let mut next = [0u8; 4];
        let mut value = [0u8; 8];
        let mut pids = Vec::new();
        loop {
            match self
                .counts
                .get_next_key(key.as_ref().map(|k| &k[..]), &mut next)
            {
                Ok(()) => pids.push(u32::from_ne_bytes(next)),
                Err(MapError::Errno(Errno::ENOENT)) => break,
                Err(e) => return Err(map_err("counts")(e)),
            }
            key = Some(next);
        }
        let mut seen = HashMap::new();
        for pid in pids {
            let k = pid.to_ne_bytes();
            let exited = !Path::new(&format!("/proc/{pid}")).exists();
            let r = if exited {
                self.counts.lookup_and_delete(&k, &mut value, 0)
            } else {
                self.counts.lookup(&k, &mut value, 0)
            };
            match r {
                Ok(()) => {}
                Err(MapError::Errno(Errno::ENOENT)) => continue,
                Err(e) => return Err(map_err("counts")(e)),
            }
            let opens = u64::from_ne_bytes(value);
            let comm = self.comm_of(pid, exited);
            let before = self.previous.get(&pid).copied().unwrap_or(0);
            let delta = opens.saturating_sub(before);
            if !exited {
                seen.insert(pid, opens);
            }
            rows.push(ProcessRow {
                pid,
                comm,
                opens,
                delta,
                rate: delta as f64 / secs,
                exited,
            });
        }
        self.previous = seen;
        rows.sort_by(|a, b| {
            b.delta
                .cmp(&a.delta)
                .then(b.opens.cmp(&a.opens))
                .then(a.pid.cmp(&b.pid))
        });
        Ok(rows)
    }

    fn comm_of(&self, pid: u32, exited: bool) -> String {
        let k = pid.to_ne_bytes();
        let mut raw = [0u8; 16];
        let found = self.comms.lookup(&k, &mut raw, 0).is_ok();
        if exited {
            // The process is gone: drop its name too. ENOENT only means it never had one.
            let _ = self.comms.delete(&k);
        }
        if found {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        } else {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_owned())
                .unwrap_or_else(|_| "?".to_owned())
        }
    }
}
