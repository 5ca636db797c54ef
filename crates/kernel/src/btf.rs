//! Fetching BTF objects from the kernel: the raw blob of a BTF object by id
//! (`BPF_BTF_GET_FD_BY_ID` + `BPF_OBJ_GET_INFO_BY_FD`), and a map's BTF with its key and value
//! type ids ([`KernelMap::btf`]).
//!
//! It does not parse BTF: the blob goes to `bpfmaps_obj::btf_value`, which knows no fds.

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
}
