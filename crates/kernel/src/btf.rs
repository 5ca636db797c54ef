//! Fetching BTF objects from the kernel: the raw blob of a BTF object by id
//! (`BPF_BTF_GET_FD_BY_ID` + `BPF_OBJ_GET_INFO_BY_FD`), and a map's BTF with its key and value
//! type ids ([`KernelMap::btf`]).
//!
//! It does not parse BTF beyond one lookup: the id of a named type in the running kernel's BTF
//! ([`vmlinux_type_id`], for the `attach_btf_id` of `tp_btf`/`fentry` programs). Formatting goes
//! to `bpfmaps_obj::btf_value`, which knows no fds.

use std::os::fd::AsFd;

use crate::map::KernelMap;
use crate::sys;
use crate::Error;

/// The largest BTF blob accepted (vmlinux BTF is about 6 MiB; a map's BTF is far smaller).
const MAX_BTF_SIZE: u32 = 256 << 20;

/// A BTF object's raw blob, as the kernel holds it after load (header, types, strings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBtf {
    /// The BTF object's id.
    pub id: u32,
    /// The blob.
    pub blob: Vec<u8>,
    /// True for kernel (vmlinux or module) BTF.
    pub kernel_btf: bool,
}

/// Reads the raw blob of the BTF object with id `id`.
pub fn btf_by_id(id: u32) -> Result<RawBtf, Error> {
    let fd = sys::btf_get_fd_by_id(id)?;
    // The first call asks for the size only; the blob cannot change afterwards (BTF objects are
    // immutable), so the second call gets all of it.
    let sizing = sys::btf_info(fd.as_fd(), &mut [])?;
    if sizing.btf_size > MAX_BTF_SIZE {
        return Err(Error::InvalidSize(format!(
            "BTF object {id} is {} bytes, more than the {MAX_BTF_SIZE} accepted",
            sizing.btf_size
        )));
    }
    let len = usize::try_from(sizing.btf_size)
        .map_err(|_| Error::InvalidSize(format!("BTF object {id} is too large")))?;
    let mut blob = vec![0u8; len];
    let info = sys::btf_info(fd.as_fd(), &mut blob)?;
    if info.btf_size != sizing.btf_size {
        return Err(Error::InvalidSize(format!(
            "BTF object {id} changed size from {} to {} bytes between two reads",
            sizing.btf_size, info.btf_size
        )));
    }
    Ok(RawBtf {
        id: info.id,
        blob,
        kernel_btf: info.kernel_btf != 0,
    })
}

/// A map's BTF: the blob of its BTF object and the type ids of its key and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapBtf {
    /// The BTF object the map was created with.
    pub btf: RawBtf,
    /// The key's type id; 0 when the map has no key type (global-data maps).
    pub key_type_id: u32,
    /// The value's type id (never 0: the kernel does not keep BTF without a value type).
    pub value_type_id: u32,
}

impl KernelMap {
    /// The map's BTF, `None` when it was created without (bpftool then prints no `formatted`
    /// member: it needs a value type id).
    pub fn btf(&self) -> Result<Option<MapBtf>, Error> {
        let (btf_id, key_type_id, value_type_id) = self.btf_ids()?;
        if btf_id == 0 || value_type_id == 0 {
            return Ok(None);
        }
        Ok(Some(MapBtf {
            btf: btf_by_id(btf_id)?,
            key_type_id,
            value_type_id,
        }))
    }
}

/// Where the running kernel's BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `BTF_KIND_TYPEDEF`.
pub const BTF_KIND_TYPEDEF: u32 = 8;
/// `BTF_KIND_FUNC`.
pub const BTF_KIND_FUNC: u32 = 12;

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// The id of the first type of kind `kind` named `name` in the BTF blob `blob` (type ids start
/// at 1), `None` when there is none. A malformed blob is an error naming the byte offset.
pub fn find_type_id(blob: &[u8], name: &str, kind: u32) -> Result<Option<u32>, Error> {
    let bad = |at: usize| Error::InvalidSize(format!("malformed BTF at byte {at}"));
    if blob.get(..2) != Some(&[0x9f, 0xeb][..]) {
        return Err(bad(0));
    }
    let field = |at| le_u32(blob, at).ok_or_else(|| bad(at));
    let hdr_len = field(4)? as usize;
    let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
    let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
    let types_start = hdr_len.checked_add(type_off).ok_or_else(|| bad(8))?;
    let types_end = types_start.checked_add(type_len).ok_or_else(|| bad(12))?;
    let strings_start = hdr_len.checked_add(str_off).ok_or_else(|| bad(16))?;
    let strings = blob
        .get(strings_start..strings_start.checked_add(str_len).ok_or_else(|| bad(20))?)
        .ok_or_else(|| bad(20))?;
    let types = blob.get(types_start..types_end).ok_or_else(|| bad(12))?;
    let wanted = name.as_bytes();
    let mut at = 0usize;
    let mut id = 1u32;
    while at < types.len() {
        let name_off = le_u32(types, at).ok_or_else(|| bad(types_start + at))? as usize;
        let info = le_u32(types, at + 4).ok_or_else(|| bad(types_start + at))?;
        let this_kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let trailer = match this_kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => 12 * vlen,
            6 | 13 => 8 * vlen,
            0 | 2 | 7..=12 | 16 | 18 => 0,
            _ => return Err(bad(types_start + at)),
        };
        if this_kind == kind {
            let here = strings.get(name_off..).unwrap_or(&[]);
            let end = here.iter().position(|&b| b == 0).unwrap_or(here.len());
            if &here[..end] == wanted {
                return Ok(Some(id));
            }
        }
        at = at.saturating_add(12 + trailer);
        id = id.saturating_add(1);
    }
    Ok(None)
}

/// The id of type `name` of kind `kind` in the running kernel's BTF ([`VMLINUX_BTF`]), read
/// once per process.
pub fn vmlinux_type_id(name: &str, kind: u32) -> Result<Option<u32>, Error> {
    static VMLINUX: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    let blob = VMLINUX.get_or_init(|| std::fs::read(VMLINUX_BTF).map_err(|e| e.to_string()));
    match blob {
        Ok(blob) => find_type_id(blob, name, kind),
        Err(e) => Err(Error::Io {
            path: VMLINUX_BTF.into(),
            source: std::io::Error::other(e.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::SysError;
    use bpfmaps_abi::Errno;

    /// True when kernel tests should run; panics when they cannot and were not skipped.
    fn kernel() -> bool {
        if std::env::var_os("BPFMAPS_SKIP_KERNEL").is_some_and(|v| v == "1") {
            eprintln!("BPFMAPS_SKIP_KERNEL=1: skipping a kernel test");
            return false;
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "kernel tests need root and BPF (set BPFMAPS_SKIP_KERNEL=1 to skip)"
        );
        true
    }

    #[test]
    fn vmlinux_btf_reads_whole_and_a_missing_id_is_enoent() {
        if !kernel() {
            return;
        }
        // The kernel's own BTF is loaded first, as object 1.
        let vmlinux = btf_by_id(1).unwrap();
        assert_eq!(vmlinux.id, 1);
        assert!(vmlinux.kernel_btf);
        assert_eq!(&vmlinux.blob[..2], &[0x9f, 0xeb]);
        let sysfs = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
        assert_eq!(vmlinux.blob, sysfs);
        match btf_by_id(u32::MAX) {
            Err(Error::Sys(SysError { call, errno })) => {
                assert_eq!((call, errno), ("BPF_BTF_GET_FD_BY_ID", Errno::ENOENT));
            }
            other => panic!("expected ENOENT, got {other:?}"),
        }
    }

    #[test]
    fn vmlinux_lookup_finds_tracepoint_typedefs_and_functions() {
        if !kernel() {
            return;
        }
        let sys_enter = vmlinux_type_id("btf_trace_sys_enter", BTF_KIND_TYPEDEF).unwrap();
        assert!(sys_enter.is_some_and(|id| id > 0));
        let blob = std::fs::read(VMLINUX_BTF).unwrap();
        // The id found names that type: its name offset points at the name.
        assert_eq!(
            find_type_id(&blob, "btf_trace_sys_enter", BTF_KIND_TYPEDEF).unwrap(),
            sys_enter
        );
        assert!(vmlinux_type_id("do_sys_openat2", BTF_KIND_FUNC)
            .unwrap()
            .is_some());
        assert_eq!(
            vmlinux_type_id("btf_trace_no_such_tp", BTF_KIND_TYPEDEF).unwrap(),
            None
        );
        assert!(find_type_id(b"garbage", "x", 1).is_err());
        assert!(find_type_id(&blob[..30], "x", 1).is_err());
    }
}
