//! The one choke point for the kernel's system calls: bpf(2), perf_event_open(2), and the mmap,
//! epoll and ioctl calls the ring consumers need.
//!
//! Every bpf(2) command has its own `#[repr(C)]` attribute struct laid out as the matching member
//! of `union bpf_attr` (`include/uapi/linux/bpf.h`), with explicit padding fields so that every byte
//! the kernel reads is initialised and every unused byte is zero (the kernel rejects non-zero bytes
//! after a command's last field with `EINVAL`). Errors carry the command's name and the errno.
//!
//! This module does not know about map semantics (that is `map.rs`) nor about ring formats (that is
//! `bpfmaps_abi::consumer`); it only moves bytes across the syscall boundary.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use bpfmaps_abi::Errno;

/// A failed system call: which one, and the errno it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SysError {
    /// The call (`"BPF_MAP_CREATE"`, `"perf_event_open"`, `"mmap"`, …).
    pub call: &'static str,
    /// The errno it failed with.
    pub errno: Errno,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.call, self.errno)
    }
}

/// The result of a system call wrapper.
pub type SysResult<T> = Result<T, SysError>;

/// The calling thread's current errno.
fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn fail(call: &'static str) -> SysError {
    SysError {
        call,
        errno: last_errno(),
    }
}

/// bpf(2) command numbers (`enum bpf_cmd`).
pub mod cmd {
    /// `BPF_MAP_CREATE`.
    pub const MAP_CREATE: u32 = 0;
    /// `BPF_MAP_LOOKUP_ELEM`.
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    /// `BPF_MAP_UPDATE_ELEM`.
    pub const MAP_UPDATE_ELEM: u32 = 2;
    /// `BPF_MAP_DELETE_ELEM`.
    pub const MAP_DELETE_ELEM: u32 = 3;
    /// `BPF_MAP_GET_NEXT_KEY`.
    pub const MAP_GET_NEXT_KEY: u32 = 4;
    /// `BPF_PROG_LOAD`.
    pub const PROG_LOAD: u32 = 5;
    /// `BPF_OBJ_PIN`.
    pub const OBJ_PIN: u32 = 6;
    /// `BPF_OBJ_GET`.
    pub const OBJ_GET: u32 = 7;
    /// `BPF_PROG_TEST_RUN`.
    pub const PROG_TEST_RUN: u32 = 10;
    /// `BPF_PROG_GET_NEXT_ID`.
    pub const PROG_GET_NEXT_ID: u32 = 11;
    /// `BPF_MAP_GET_NEXT_ID`.
    pub const MAP_GET_NEXT_ID: u32 = 12;
    /// `BPF_PROG_GET_FD_BY_ID`.
    pub const PROG_GET_FD_BY_ID: u32 = 13;
    /// `BPF_MAP_GET_FD_BY_ID`.
    pub const MAP_GET_FD_BY_ID: u32 = 14;
    /// `BPF_OBJ_GET_INFO_BY_FD`.
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    /// `BPF_RAW_TRACEPOINT_OPEN`.
    pub const RAW_TRACEPOINT_OPEN: u32 = 17;
    /// `BPF_BTF_LOAD`.
    pub const BTF_LOAD: u32 = 18;
    /// `BPF_BTF_GET_FD_BY_ID`.
    pub const BTF_GET_FD_BY_ID: u32 = 19;
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`.
    pub const MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
    /// `BPF_MAP_FREEZE`.
    pub const MAP_FREEZE: u32 = 22;
    /// `BPF_MAP_LOOKUP_BATCH`.
    pub const MAP_LOOKUP_BATCH: u32 = 24;
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`.
    pub const MAP_LOOKUP_AND_DELETE_BATCH: u32 = 25;
    /// `BPF_MAP_UPDATE_BATCH`.
    pub const MAP_UPDATE_BATCH: u32 = 26;
    /// `BPF_MAP_DELETE_BATCH`.
    pub const MAP_DELETE_BATCH: u32 = 27;
}

/// A bpf(2) attribute struct: `#[repr(C)]`, fully initialised, no implicit padding.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` structs made only of integer fields and byte arrays, with
/// every padding byte spelled out as a field, so that passing `size_of::<Self>()` bytes to the
/// kernel reads only initialised memory and the kernel may write any of those bytes back.
unsafe trait BpfAttr: Sized {}

fn bpf<A: BpfAttr>(command: u32, name: &'static str, attr: &mut A) -> SysResult<i64> {
    // SAFETY: `attr` is a valid, exclusively borrowed, fully initialised `#[repr(C)]` struct of
    // `size_of::<A>()` bytes (the `BpfAttr` contract); the kernel reads and may write exactly that
    // many bytes and keeps no reference after returning. Pointers inside the attr point at buffers
    // the callers keep alive for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_long,
            attr as *mut A as *mut libc::c_void,
            std::mem::size_of::<A>() as libc::c_long,
        )
    };
    if ret < 0 {
        Err(fail(name))
    } else {
        Ok(ret)
    }
}

fn bpf_fd<A: BpfAttr>(command: u32, name: &'static str, attr: &mut A) -> SysResult<OwnedFd> {
    let fd = bpf(command, name, attr)?;
    let raw = RawFd::try_from(fd).map_err(|_| SysError {
        call: name,
        errno: Errno::EINVAL,
    })?;
    // SAFETY: the kernel just returned `raw` as a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn ptr(buf: &[u8]) -> u64 {
    if buf.is_empty() {
        0
    } else {
        buf.as_ptr() as u64
    }
}

fn ptr_mut(buf: &mut [u8]) -> u64 {
    if buf.is_empty() {
        0
    } else {
        buf.as_mut_ptr() as u64
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // File descriptors are non-negative, so this conversion never changes the value.
    fd.as_raw_fd() as u32
}

/// `attr` for `BPF_MAP_CREATE`: 72 bytes, up to `map_extra`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}
// SAFETY: repr(C), integers and a byte array, offsets 0..64 are u32s/bytes and map_extra sits at
// the 8-aligned offset 64, so there is no implicit padding (checked by the size assertion below).
unsafe impl BpfAttr for MapCreateAttr {}
const _: () = assert!(std::mem::size_of::<MapCreateAttr>() == 72);

/// `attr` for the element commands (lookup, update, delete, get_next_key, lookup_and_delete).
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}
// SAFETY: repr(C), only integers, the hole after `map_fd` is the explicit `pad` field.
unsafe impl BpfAttr for MapElemAttr {}
const _: () = assert!(std::mem::size_of::<MapElemAttr>() == 32);

/// `attr.batch` for the four batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
// SAFETY: repr(C), only integers, `count` and `map_fd` fill one 8-byte slot exactly.
unsafe impl BpfAttr for BatchAttr {}
const _: () = assert!(std::mem::size_of::<BatchAttr>() == 56);

/// `attr` for `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}
// SAFETY: repr(C), only integers, the tail after `path_fd` is the explicit `pad` field.
unsafe impl BpfAttr for ObjAttr {}
const _: () = assert!(std::mem::size_of::<ObjAttr>() == 24);

/// `attr` for `BPF_MAP_GET_NEXT_ID` (`start_id`, `next_id`) and `BPF_MAP_GET_FD_BY_ID` (`map_id`,
/// `open_flags`).
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}
// SAFETY: repr(C), three u32s, no padding.
unsafe impl BpfAttr for IdAttr {}

/// `attr.info` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
// SAFETY: repr(C), only integers, no padding.
unsafe impl BpfAttr for InfoAttr {}

/// `attr` for `BPF_MAP_FREEZE`: only `map_fd`.
#[repr(C)]
#[derive(Default)]
struct FreezeAttr {
    map_fd: u32,
}
// SAFETY: repr(C), one u32.
unsafe impl BpfAttr for FreezeAttr {}

/// `attr` for `BPF_PROG_LOAD`, up to `core_relo_cnt`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    core_relo_cnt: u32,
}
// SAFETY: repr(C), integers and a byte array laid out without holes (checked by the size below:
// every u64 sits at an 8-aligned offset after an even number of u32s).
unsafe impl BpfAttr for ProgLoadAttr {}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 120);

/// `attr.test` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}
// SAFETY: repr(C), only integers, the tail after `batch_size` is the explicit `pad` field.
unsafe impl BpfAttr for TestRunAttr {}
const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

/// `struct bpf_map_info` as `BPF_OBJ_GET_INFO_BY_FD` fills it (the fields up to `hash_size`).
#[repr(C)]
#[derive(Default, Debug, Clone)]
pub struct RawMapInfo {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// The map id.
    pub id: u32,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Max entries (as the kernel rounded it).
    pub max_entries: u32,
    /// Creation flags.
    pub map_flags: u32,
    /// NUL-padded name.
    pub name: [u8; 16],
    /// Offload ifindex.
    pub ifindex: u32,
    /// vmlinux BTF value type id (struct_ops).
    pub btf_vmlinux_value_type_id: u32,
    /// Offload netns device.
    pub netns_dev: u64,
    /// Offload netns inode.
    pub netns_ino: u64,
    /// Id of the map's BTF object, 0 without BTF.
    pub btf_id: u32,
    /// BTF type id of the key.
    pub btf_key_type_id: u32,
    /// BTF type id of the value.
    pub btf_value_type_id: u32,
    /// vmlinux BTF id (struct_ops).
    pub btf_vmlinux_id: u32,
    /// `map_extra`.
    pub map_extra: u64,
    /// Must be 0 on input (a non-zero pointer asks for the map's hash).
    pub hash: u64,
    /// Hash buffer size.
    pub hash_size: u32,
    /// Explicit tail padding.
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<RawMapInfo>() == 104);

/// Copies `name` into a NUL-padded 16-byte object name. Longer names are truncated to 16 bytes
/// without a terminator, so the kernel itself rejects them (`EINVAL`), as it would from C.
fn object_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(16);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// The parameters of `BPF_MAP_CREATE` that bpfmaps uses.
#[derive(Clone, Debug, Default)]
pub struct MapCreate<'a> {
    /// `map_type`.
    pub map_type: u32,
    /// `key_size`.
    pub key_size: u32,
    /// `value_size`.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags`.
    pub map_flags: u32,
    /// `map_name` (validated by the kernel).
    pub name: &'a str,
    /// `map_extra` (must be 0 except for bloom filters and arenas).
    pub map_extra: u64,
    /// `btf_fd`: the BTF object the key and value type ids refer to (`None`: no BTF).
    pub btf_fd: Option<BorrowedFd<'a>>,
    /// `btf_key_type_id` (0: none).
    pub btf_key_type_id: u32,
    /// `btf_value_type_id` (0: none).
    pub btf_value_type_id: u32,
    /// `inner_map_fd`: the template of a map-in-map's values.
    pub inner_map_fd: Option<BorrowedFd<'a>>,
}

/// `BPF_MAP_CREATE`.
pub fn map_create(params: &MapCreate<'_>) -> SysResult<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: params.map_type,
        key_size: params.key_size,
        value_size: params.value_size,
        max_entries: params.max_entries,
        map_flags: params.map_flags,
        map_name: object_name(params.name),
        map_extra: params.map_extra,
        btf_fd: params.btf_fd.map_or(0, fd_u32),
        btf_key_type_id: params.btf_key_type_id,
        btf_value_type_id: params.btf_value_type_id,
        inner_map_fd: params.inner_map_fd.map_or(0, fd_u32),
        ..Default::default()
    };
    bpf_fd(cmd::MAP_CREATE, "BPF_MAP_CREATE", &mut attr)
}

/// `BPF_MAP_LOOKUP_ELEM`. An empty `key` or `value` is passed as NULL.
pub fn map_lookup_elem(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
    flags: u64,
) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: ptr(key),
        value_or_next_key: ptr_mut(value),
        flags,
        ..Default::default()
    };
    bpf(cmd::MAP_LOOKUP_ELEM, "BPF_MAP_LOOKUP_ELEM", &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`. An empty `key` or `value` is passed as NULL.
pub fn map_lookup_and_delete_elem(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
    flags: u64,
) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: ptr(key),
        value_or_next_key: ptr_mut(value),
        flags,
        ..Default::default()
    };
    bpf(
        cmd::MAP_LOOKUP_AND_DELETE_ELEM,
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        &mut attr,
    )
    .map(drop)
}

/// `BPF_MAP_UPDATE_ELEM`; `flags` pass through untouched. An empty `key` or `value` is NULL.
pub fn map_update_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: ptr(key),
        value_or_next_key: ptr(value),
        flags,
        ..Default::default()
    };
    bpf(cmd::MAP_UPDATE_ELEM, "BPF_MAP_UPDATE_ELEM", &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM`. An empty `key` is passed as NULL.
pub fn map_delete_elem(map: BorrowedFd<'_>, key: &[u8]) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: ptr(key),
        ..Default::default()
    };
    bpf(cmd::MAP_DELETE_ELEM, "BPF_MAP_DELETE_ELEM", &mut attr).map(drop)
}

/// `BPF_MAP_GET_NEXT_KEY`. `key: None` (or an empty key) is passed as NULL.
pub fn map_get_next_key(
    map: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next_key: &mut [u8],
) -> SysResult<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: key.map_or(0, ptr),
        value_or_next_key: ptr_mut(next_key),
        ..Default::default()
    };
    bpf(cmd::MAP_GET_NEXT_KEY, "BPF_MAP_GET_NEXT_KEY", &mut attr).map(drop)
}

/// `BPF_MAP_FREEZE`.
pub fn map_freeze(map: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = FreezeAttr {
        map_fd: fd_u32(map),
    };
    bpf(cmd::MAP_FREEZE, "BPF_MAP_FREEZE", &mut attr).map(drop)
}

/// Which batch command [`map_batch`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchCmd {
    /// `BPF_MAP_LOOKUP_BATCH`.
    Lookup,
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`.
    LookupAndDelete,
    /// `BPF_MAP_UPDATE_BATCH`.
    Update,
    /// `BPF_MAP_DELETE_BATCH`.
    Delete,
}

impl BatchCmd {
    fn number_and_name(self) -> (u32, &'static str) {
        match self {
            BatchCmd::Lookup => (cmd::MAP_LOOKUP_BATCH, "BPF_MAP_LOOKUP_BATCH"),
            BatchCmd::LookupAndDelete => (
                cmd::MAP_LOOKUP_AND_DELETE_BATCH,
                "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
            ),
            BatchCmd::Update => (cmd::MAP_UPDATE_BATCH, "BPF_MAP_UPDATE_BATCH"),
            BatchCmd::Delete => (cmd::MAP_DELETE_BATCH, "BPF_MAP_DELETE_BATCH"),
        }
    }
}

/// The buffers of one batch call. Empty slices are passed as NULL.
#[derive(Debug)]
pub struct BatchCall<'a> {
    /// `in_batch` (`None`: NULL, start from the beginning).
    pub in_batch: Option<&'a [u8]>,
    /// `out_batch`.
    pub out_batch: &'a mut [u8],
    /// `keys`.
    pub keys: &'a mut [u8],
    /// `values`.
    pub values: &'a mut [u8],
    /// `count`, in and out.
    pub count: u32,
    /// `elem_flags`.
    pub elem_flags: u64,
    /// `flags`.
    pub flags: u64,
}

/// One batch command. `call.count` is set to what the kernel wrote back, on success and on
/// failure alike (the kernel leaves it untouched on early failures).
pub fn map_batch(
    map: BorrowedFd<'_>,
    command: BatchCmd,
    call: &mut BatchCall<'_>,
) -> SysResult<()> {
    let mut attr = BatchAttr {
        in_batch: call.in_batch.map_or(0, ptr),
        out_batch: ptr_mut(call.out_batch),
        keys: ptr_mut(call.keys),
        values: ptr_mut(call.values),
        count: call.count,
        map_fd: fd_u32(map),
        elem_flags: call.elem_flags,
        flags: call.flags,
    };
    let (number, name) = command.number_and_name();
    let result = bpf(number, name, &mut attr);
    call.count = attr.count;
    result.map(drop)
}

/// The `BPF_OBJ_GET` access flag `BPF_F_RDONLY`.
pub const BPF_F_RDONLY: u32 = 1 << 3;
/// The `BPF_OBJ_GET` access flag `BPF_F_WRONLY`.
pub const BPF_F_WRONLY: u32 = 1 << 4;

fn path_cstring(path: &Path, call: &'static str) -> SysResult<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        call,
        errno: Errno::EINVAL,
    })
}

/// `BPF_OBJ_PIN`: pins `fd` at `path` (which must be on bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> SysResult<()> {
    let c_path = path_cstring(path, "BPF_OBJ_PIN")?;
    let mut attr = ObjAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: fd_u32(fd),
        ..Default::default()
    };
    bpf(cmd::OBJ_PIN, "BPF_OBJ_PIN", &mut attr).map(drop)
}

/// `BPF_OBJ_GET` with `file_flags` 0, [`BPF_F_RDONLY`] or [`BPF_F_WRONLY`].
pub fn obj_get(path: &Path, file_flags: u32) -> SysResult<OwnedFd> {
    let c_path = path_cstring(path, "BPF_OBJ_GET")?;
    let mut attr = ObjAttr {
        pathname: c_path.as_ptr() as u64,
        file_flags,
        ..Default::default()
    };
    bpf_fd(cmd::OBJ_GET, "BPF_OBJ_GET", &mut attr)
}

/// `BPF_MAP_GET_NEXT_ID`: the first map id above `start_id`, `None` after the last one.
pub fn map_get_next_id(start_id: u32) -> SysResult<Option<u32>> {
    let mut attr = IdAttr {
        id: start_id,
        ..Default::default()
    };
    match bpf(cmd::MAP_GET_NEXT_ID, "BPF_MAP_GET_NEXT_ID", &mut attr) {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_GET_FD_BY_ID` with `open_flags` 0, [`BPF_F_RDONLY`] or [`BPF_F_WRONLY`].
pub fn map_get_fd_by_id(id: u32, open_flags: u32) -> SysResult<OwnedFd> {
    let mut attr = IdAttr {
        id,
        next_id: 0,
        open_flags,
    };
    bpf_fd(cmd::MAP_GET_FD_BY_ID, "BPF_MAP_GET_FD_BY_ID", &mut attr)
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a map fd.
pub fn map_info(map: BorrowedFd<'_>) -> SysResult<RawMapInfo> {
    let mut info = RawMapInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(map),
        info_len: std::mem::size_of::<RawMapInfo>() as u32,
        info: &mut info as *mut RawMapInfo as u64,
    };
    bpf(cmd::OBJ_GET_INFO_BY_FD, "BPF_OBJ_GET_INFO_BY_FD", &mut attr)?;
    Ok(info)
}

/// `struct bpf_btf_info` as `BPF_OBJ_GET_INFO_BY_FD` fills it for a BTF object fd.
#[repr(C)]
#[derive(Default, Debug, Clone)]
pub struct RawBtfInfo {
    /// In: where the kernel copies the raw BTF blob (0: do not copy).
    pub btf: u64,
    /// In: the size of that buffer; out: the size of the blob.
    pub btf_size: u32,
    /// The BTF object's id.
    pub id: u32,
    /// In: where the kernel copies the name (0: do not copy).
    pub name: u64,
    /// In: the size of the name buffer; out: the name's length.
    pub name_len: u32,
    /// 1 for kernel (vmlinux or module) BTF.
    pub kernel_btf: u32,
}
const _: () = assert!(std::mem::size_of::<RawBtfInfo>() == 32);

/// `BPF_BTF_GET_FD_BY_ID`: a read-only fd of the BTF object with id `id`.
pub fn btf_get_fd_by_id(id: u32) -> SysResult<OwnedFd> {
    // `attr` for this command starts `btf_id`, `next_id`, `open_flags`, like the map's.
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    bpf_fd(cmd::BTF_GET_FD_BY_ID, "BPF_BTF_GET_FD_BY_ID", &mut attr)
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a BTF fd. When `blob` is not empty the kernel copies up to
/// `blob.len()` bytes of the raw BTF into it; the returned `btf_size` is the blob's full size.
pub fn btf_info(btf: BorrowedFd<'_>, blob: &mut [u8]) -> SysResult<RawBtfInfo> {
    let mut info = RawBtfInfo {
        btf: ptr_mut(blob),
        btf_size: u32::try_from(blob.len()).map_err(|_| SysError {
            call: "BPF_OBJ_GET_INFO_BY_FD",
            errno: Errno::E2BIG,
        })?,
        ..Default::default()
    };
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(btf),
        info_len: std::mem::size_of::<RawBtfInfo>() as u32,
        info: &mut info as *mut RawBtfInfo as u64,
    };
    bpf(cmd::OBJ_GET_INFO_BY_FD, "BPF_OBJ_GET_INFO_BY_FD", &mut attr)?;
    Ok(info)
}

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT` (runnable with [`prog_test_run`], also on a chosen CPU).
pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// A program the verifier rejected (or another `BPF_PROG_LOAD` failure), with its log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BPF_PROG_LOAD failed: {errno}\n{log}")]
pub struct ProgLoadError {
    /// The errno.
    pub errno: Errno,
    /// The verifier log (empty when the load failed before verification).
    pub log: String,
}

/// `BPF_PROG_LOAD` of hand-encoded instructions: each `u64` is one 8-byte instruction slot in
/// the kernel's little-endian encoding (`code`, `dst|src<<4`, `off`, `imm`), map references as
/// `BPF_LD_IMM64` with `src_reg = BPF_PSEUDO_MAP_FD` and the fd in `imm`. On failure the load
/// is retried with a verifier log, which the error carries.
pub fn prog_load_raw(
    prog_type: u32,
    insns: &[u64],
    license: &str,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    prog_load(&ProgLoad {
        prog_type,
        insns: &bytes,
        license,
        name,
        ..ProgLoad::default()
    })
}

/// The parameters of one [`prog_load`].
#[derive(Clone, Debug, Default)]
pub struct ProgLoad<'a> {
    /// `prog_type`.
    pub prog_type: u32,
    /// `expected_attach_type`.
    pub expected_attach_type: u32,
    /// The instructions as little-endian bytecode (8 bytes per slot).
    pub insns: &'a [u8],
    /// The license (`GPL` for GPL-only helpers).
    pub license: &'a str,
    /// `prog_name` (cut to 15 bytes, as libbpf cuts it).
    pub name: &'a str,
    /// `kern_version`.
    pub kern_version: u32,
    /// `prog_btf_fd` (`None`: no BTF, and then no func or line info either).
    pub btf_fd: Option<BorrowedFd<'a>>,
    /// `func_info` records of `func_info_rec_size` bytes.
    pub func_info: &'a [u8],
    /// `func_info_rec_size`.
    pub func_info_rec_size: u32,
    /// `line_info` records of `line_info_rec_size` bytes.
    pub line_info: &'a [u8],
    /// `line_info_rec_size`.
    pub line_info_rec_size: u32,
    /// `attach_btf_id` (a vmlinux BTF type id for tracing programs).
    pub attach_btf_id: u32,
}

/// How large a verifier log the retry of a failed load asks for.
const VERIFIER_LOG_SIZE: usize = 16 << 20;

/// `BPF_PROG_LOAD`. On failure the load is retried with a verifier log (level 1), and the error
/// carries the first attempt's errno and the log, decoded lossily (bytes that are not UTF-8
/// become U+FFFD).
pub fn prog_load(params: &ProgLoad<'_>) -> Result<OwnedFd, ProgLoadError> {
    let license = CString::new(params.license).map_err(|_| ProgLoadError {
        errno: Errno::EINVAL,
        log: "the license string has a NUL byte".into(),
    })?;
    let count = |bytes: &[u8], rec: u32, what: &str| -> Result<u32, ProgLoadError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        let rec = usize::try_from(rec).unwrap_or(0);
        if rec == 0 || !bytes.len().is_multiple_of(rec) {
            return Err(ProgLoadError {
                errno: Errno::EINVAL,
                log: format!(
                    "{what}: {} bytes is not a whole number of {rec}-byte records",
                    bytes.len()
                ),
            });
        }
        u32::try_from(bytes.len() / rec).map_err(|_| ProgLoadError {
            errno: Errno::E2BIG,
            log: format!("{what}: too many records"),
        })
    };
    if !params.insns.len().is_multiple_of(8) {
        return Err(ProgLoadError {
            errno: Errno::EINVAL,
            log: format!(
                "{} bytes of instructions is not a whole number of 8-byte slots",
                params.insns.len()
            ),
        });
    }
    let insn_cnt = u32::try_from(params.insns.len() / 8).map_err(|_| ProgLoadError {
        errno: Errno::E2BIG,
        log: String::new(),
    })?;
    let with_btf = params.btf_fd.is_some();
    let attr = ProgLoadAttr {
        prog_type: params.prog_type,
        insn_cnt,
        insns: ptr(params.insns),
        license: license.as_ptr() as u64,
        kern_version: params.kern_version,
        prog_name: object_name(&cut_name(params.name)),
        expected_attach_type: params.expected_attach_type,
        prog_btf_fd: params.btf_fd.map_or(0, fd_u32),
        func_info_rec_size: if with_btf {
            params.func_info_rec_size
        } else {
            0
        },
        func_info: if with_btf { ptr(params.func_info) } else { 0 },
        func_info_cnt: if with_btf {
            count(params.func_info, params.func_info_rec_size, "func_info")?
        } else {
            0
        },
        line_info_rec_size: if with_btf {
            params.line_info_rec_size
        } else {
            0
        },
        line_info: if with_btf { ptr(params.line_info) } else { 0 },
        line_info_cnt: if with_btf {
            count(params.line_info, params.line_info_rec_size, "line_info")?
        } else {
            0
        },
        attach_btf_id: params.attach_btf_id,
        ..Default::default()
    };
    let mut first_attr = attr;
    match bpf_fd(cmd::PROG_LOAD, "BPF_PROG_LOAD", &mut first_attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; VERIFIER_LOG_SIZE];
            let mut attr = ProgLoadAttr {
                log_level: 1,
                log_size: log.len() as u32,
                log_buf: log.as_mut_ptr() as u64,
                ..attr
            };
            match bpf_fd(cmd::PROG_LOAD, "BPF_PROG_LOAD", &mut attr) {
                // The load succeeded with a log after failing without one (a transient failure
                // such as EAGAIN): keep the program.
                Ok(fd) => Ok(fd),
                Err(_) => Err(ProgLoadError {
                    errno: first.errno,
                    log: decode_log(&log),
                }),
            }
        }
    }
}

/// A kernel log buffer up to its first NUL, decoded lossily.
fn decode_log(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// `name` cut to the kernel's 15 bytes at a character boundary.
fn cut_name(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// `attr` for `BPF_BTF_LOAD`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    btf_log_true_size: u32,
}
// SAFETY: repr(C), only integers, two u64s then four u32s: no padding.
unsafe impl BpfAttr for BtfLoadAttr {}
const _: () = assert!(std::mem::size_of::<BtfLoadAttr>() == 32);

/// BTF the kernel refused, with its log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BPF_BTF_LOAD failed: {errno}\n{log}")]
pub struct BtfLoadError {
    /// The errno.
    pub errno: Errno,
    /// The kernel's BTF log.
    pub log: String,
}

/// `BPF_BTF_LOAD` of a raw BTF blob; on failure retried with a log, which the error carries.
pub fn btf_load(blob: &[u8]) -> Result<OwnedFd, BtfLoadError> {
    let attr = BtfLoadAttr {
        btf: ptr(blob),
        btf_size: u32::try_from(blob.len()).map_err(|_| BtfLoadError {
            errno: Errno::E2BIG,
            log: String::new(),
        })?,
        ..Default::default()
    };
    let mut first_attr = attr;
    match bpf_fd(cmd::BTF_LOAD, "BPF_BTF_LOAD", &mut first_attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 1 << 20];
            let mut attr = BtfLoadAttr {
                btf_log_buf: log.as_mut_ptr() as u64,
                btf_log_size: log.len() as u32,
                btf_log_level: 1,
                ..attr
            };
            match bpf_fd(cmd::BTF_LOAD, "BPF_BTF_LOAD", &mut attr) {
                Ok(fd) => Ok(fd),
                Err(_) => Err(BtfLoadError {
                    errno: first.errno,
                    log: decode_log(&log),
                }),
            }
        }
    }
}

/// `attr.raw_tracepoint` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}
// SAFETY: repr(C), only integers, the hole after `prog_fd` is the explicit `pad`.
unsafe impl BpfAttr for RawTracepointAttr {}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches a raw tracepoint program to tracepoint `name`, or a
/// `tp_btf`/`fentry`/`fexit` program to the target it was loaded for (`name: None`). The
/// returned fd is the link: closing it detaches.
pub fn raw_tracepoint_open(prog: BorrowedFd<'_>, name: Option<&str>) -> SysResult<OwnedFd> {
    let c_name = match name {
        Some(n) => Some(CString::new(n).map_err(|_| SysError {
            call: "BPF_RAW_TRACEPOINT_OPEN",
            errno: Errno::EINVAL,
        })?),
        None => None,
    };
    let mut attr = RawTracepointAttr {
        name: c_name.as_ref().map_or(0, |c| c.as_ptr() as u64),
        prog_fd: fd_u32(prog),
        pad: 0,
    };
    bpf_fd(
        cmd::RAW_TRACEPOINT_OPEN,
        "BPF_RAW_TRACEPOINT_OPEN",
        &mut attr,
    )
}

/// `BPF_PROG_GET_NEXT_ID`: the first program id above `start_id`, `None` after the last one.
pub fn prog_get_next_id(start_id: u32) -> SysResult<Option<u32>> {
    let mut attr = IdAttr {
        id: start_id,
        ..Default::default()
    };
    match bpf(cmd::PROG_GET_NEXT_ID, "BPF_PROG_GET_NEXT_ID", &mut attr) {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_get_fd_by_id(id: u32) -> SysResult<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    bpf_fd(cmd::PROG_GET_FD_BY_ID, "BPF_PROG_GET_FD_BY_ID", &mut attr)
}

/// `struct bpf_prog_info` as `BPF_OBJ_GET_INFO_BY_FD` fills it (up to `attach_btf_id`).
#[repr(C)]
#[derive(Default, Debug, Clone)]
pub struct RawProgInfo {
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// The program id.
    pub id: u32,
    /// The program's tag (a hash of its instructions).
    pub tag: [u8; 8],
    /// Bytes of JITed code.
    pub jited_prog_len: u32,
    /// Bytes of translated instructions.
    pub xlated_prog_len: u32,
    /// In: where to copy the JITed code (0: not copied).
    pub jited_prog_insns: u64,
    /// In: where to copy the translated instructions (0: not copied).
    pub xlated_prog_insns: u64,
    /// Load time, in ns since boot.
    pub load_time: u64,
    /// The uid that loaded it.
    pub created_by_uid: u32,
    /// In: room for map ids; out: how many the program uses.
    pub nr_map_ids: u32,
    /// In: where to copy the map ids.
    pub map_ids: u64,
    /// NUL-padded name.
    pub name: [u8; 16],
    /// Offload ifindex.
    pub ifindex: u32,
    /// Bit 0: GPL compatible.
    pub gpl_compatible: u32,
    /// Offload netns device.
    pub netns_dev: u64,
    /// Offload netns inode.
    pub netns_ino: u64,
    /// Number of JITed symbols.
    pub nr_jited_ksyms: u32,
    /// Number of JITed function lengths.
    pub nr_jited_func_lens: u32,
    /// JITed symbol addresses.
    pub jited_ksyms: u64,
    /// JITed function lengths.
    pub jited_func_lens: u64,
    /// The program's BTF object id, 0 without BTF.
    pub btf_id: u32,
    /// func_info record size.
    pub func_info_rec_size: u32,
    /// func_info buffer.
    pub func_info: u64,
    /// Number of func_info records.
    pub nr_func_info: u32,
    /// Number of line_info records.
    pub nr_line_info: u32,
    /// line_info buffer.
    pub line_info: u64,
    /// JITed line info buffer.
    pub jited_line_info: u64,
    /// Number of JITed line info records.
    pub nr_jited_line_info: u32,
    /// line_info record size.
    pub line_info_rec_size: u32,
    /// JITed line info record size.
    pub jited_line_info_rec_size: u32,
    /// Number of program tags.
    pub nr_prog_tags: u32,
    /// Program tags buffer.
    pub prog_tags: u64,
    /// Total run time (with `kernel.bpf_stats_enabled`).
    pub run_time_ns: u64,
    /// Run count (with `kernel.bpf_stats_enabled`).
    pub run_cnt: u64,
    /// Recursion misses.
    pub recursion_misses: u64,
    /// Instructions the verifier processed.
    pub verified_insns: u32,
    /// BTF object id of the attach target.
    pub attach_btf_obj_id: u32,
    /// BTF type id of the attach target.
    pub attach_btf_id: u32,
    /// Explicit tail padding.
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<RawProgInfo>() == 232);

/// A program's info, translated instructions and map ids (`BPF_OBJ_GET_INFO_BY_FD`, twice: once
/// for the sizes, once with buffers).
pub fn prog_info(prog: BorrowedFd<'_>) -> SysResult<(RawProgInfo, Vec<u8>, Vec<u32>)> {
    let get = |info: &mut RawProgInfo| -> SysResult<()> {
        let mut attr = InfoAttr {
            bpf_fd: fd_u32(prog),
            info_len: std::mem::size_of::<RawProgInfo>() as u32,
            info: info as *mut RawProgInfo as u64,
        };
        bpf(cmd::OBJ_GET_INFO_BY_FD, "BPF_OBJ_GET_INFO_BY_FD", &mut attr).map(drop)
    };
    let mut sizing = RawProgInfo::default();
    get(&mut sizing)?;
    let mut xlated = vec![0u8; usize::try_from(sizing.xlated_prog_len).unwrap_or(0)];
    let mut map_ids = vec![0u32; usize::try_from(sizing.nr_map_ids).unwrap_or(0)];
    let mut info = RawProgInfo {
        xlated_prog_len: sizing.xlated_prog_len,
        xlated_prog_insns: ptr_mut(&mut xlated),
        nr_map_ids: sizing.nr_map_ids,
        map_ids: if map_ids.is_empty() {
            0
        } else {
            map_ids.as_mut_ptr() as u64
        },
        ..Default::default()
    };
    get(&mut info)?;
    // A program never changes after load, so the second call fills exactly what the first
    // sized; clamp anyway rather than trust it.
    xlated.truncate(usize::try_from(info.xlated_prog_len).unwrap_or(0));
    map_ids.truncate(usize::try_from(info.nr_map_ids).unwrap_or(0));
    info.xlated_prog_insns = 0;
    info.map_ids = 0;
    Ok((info, xlated, map_ids))
}

/// The inputs of one [`prog_test_run`].
#[derive(Clone, Debug, Default)]
pub struct TestRun<'a> {
    /// `data_in` (packet data for socket filters; must be empty for raw tracepoints).
    pub data_in: &'a [u8],
    /// `ctx_in` (for raw tracepoints: the `u64` arguments).
    pub ctx_in: &'a [u8],
    /// `repeat` (must be 0 for raw tracepoints).
    pub repeat: u32,
    /// Run on this CPU (`BPF_F_TEST_RUN_ON_CPU`; raw tracepoints only).
    pub cpu: Option<u32>,
}

/// What one [`prog_test_run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    /// The program's return value (`r0`, truncated to 32 bits).
    pub retval: u32,
    /// Average run time in ns as the kernel measured it.
    pub duration_ns: u32,
}

/// `BPF_PROG_TEST_RUN`.
pub fn prog_test_run(prog: BorrowedFd<'_>, run: &TestRun<'_>) -> SysResult<TestRunResult> {
    const BPF_F_TEST_RUN_ON_CPU: u32 = 1;
    let too_big = SysError {
        call: "BPF_PROG_TEST_RUN",
        errno: Errno::E2BIG,
    };
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: u32::try_from(run.data_in.len()).map_err(|_| too_big)?,
        data_in: ptr(run.data_in),
        repeat: run.repeat,
        ctx_size_in: u32::try_from(run.ctx_in.len()).map_err(|_| too_big)?,
        ctx_in: ptr(run.ctx_in),
        flags: if run.cpu.is_some() {
            BPF_F_TEST_RUN_ON_CPU
        } else {
            0
        },
        cpu: run.cpu.unwrap_or(0),
        ..Default::default()
    };
    bpf(cmd::PROG_TEST_RUN, "BPF_PROG_TEST_RUN", &mut attr)?;
    Ok(TestRunResult {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// `struct perf_event_attr` up to `config3` (`PERF_ATTR_SIZE_VER8`, 136 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flag_bits: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
    config3: u64,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 136);

/// `PERF_TYPE_SOFTWARE`.
const PERF_TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_BPF_OUTPUT`.
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
/// `PERF_SAMPLE_RAW`.
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `PERF_EVENT_IOC_ENABLE` (`_IO('$', 0)`).
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// perf_event_open(2) of a `PERF_COUNT_SW_BPF_OUTPUT` event on `cpu` for every process
/// (`pid = -1`), sampling raw data with `sample_period` 1 and waking the reader every
/// `wakeup_events` samples. The event starts disabled; see [`perf_event_enable`].
pub fn perf_event_open_bpf_output(cpu: u32, wakeup_events: u32) -> SysResult<OwnedFd> {
    const DISABLED: u64 = 1;
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_BPF_OUTPUT,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        flag_bits: DISABLED,
        wakeup_events: wakeup_events.max(1),
        ..Default::default()
    };
    let cpu = libc::c_int::try_from(cpu).map_err(|_| SysError {
        call: "perf_event_open",
        errno: Errno::EINVAL,
    })?;
    // SAFETY: `attr` is a fully initialised perf_event_attr whose `size` field says how many bytes
    // the kernel may read; the kernel keeps no reference to it after returning.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(fail("perf_event_open"));
    }
    let raw = RawFd::try_from(ret).map_err(|_| SysError {
        call: "perf_event_open",
        errno: Errno::EINVAL,
    })?;
    // SAFETY: the kernel just returned `raw` as a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `ioctl(PERF_EVENT_IOC_ENABLE)`.
pub fn perf_event_enable(event: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: PERF_EVENT_IOC_ENABLE takes an integer argument (0) and no pointer.
    let ret = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) };
    if ret < 0 {
        Err(fail("ioctl(PERF_EVENT_IOC_ENABLE)"))
    } else {
        Ok(())
    }
}

/// `PERF_TYPE_TRACEPOINT`.
pub const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_TYPE_SOFTWARE`.
pub const PERF_TYPE_SOFTWARE_EVENT: u32 = PERF_TYPE_SOFTWARE;
/// `PERF_COUNT_SW_CPU_CLOCK`.
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;

/// The fields of a `perf_event_attr` that attaching BPF programs uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfEventSpec {
    /// `type` (`PERF_TYPE_TRACEPOINT`, `PERF_TYPE_SOFTWARE`, a dynamic PMU such as uprobe's).
    pub type_: u32,
    /// `config` (tracepoint id, software counter, the uprobe PMU's retprobe bit).
    pub config: u64,
    /// `config1` (the uprobe PMU: a pointer to the NUL-terminated path).
    pub config1: u64,
    /// `config2` (the uprobe PMU: the file offset of the probed instruction).
    pub config2: u64,
    /// `sample_period`, or `sample_freq` when `freq` is set.
    pub sample_period_or_freq: u64,
    /// Sample at a frequency (`freq` bit) rather than every `sample_period` events.
    pub freq: bool,
}

/// perf_event_open(2) of `spec` for `pid` on `cpu` (-1: any), created disabled; enable it
/// after [`perf_event_set_bpf`] with [`perf_event_enable`].
pub fn perf_event_open(spec: &PerfEventSpec, pid: i32, cpu: i32) -> SysResult<OwnedFd> {
    const DISABLED: u64 = 1;
    const FREQ: u64 = 1 << 10;
    let attr = PerfEventAttr {
        type_: spec.type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: spec.config,
        sample_period: spec.sample_period_or_freq,
        flag_bits: DISABLED | if spec.freq { FREQ } else { 0 },
        wakeup_events: 1,
        config1: spec.config1,
        config2: spec.config2,
        ..Default::default()
    };
    // SAFETY: `attr` is a fully initialised perf_event_attr whose `size` field says how many bytes
    // the kernel may read; `config1`, when it is a path pointer, points at a string the caller
    // keeps alive across the call; the kernel keeps no reference to either after returning.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            pid as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(fail("perf_event_open"));
    }
    let raw = RawFd::try_from(ret).map_err(|_| SysError {
        call: "perf_event_open",
        errno: Errno::EINVAL,
    })?;
    // SAFETY: the kernel just returned `raw` as a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `ioctl(PERF_EVENT_IOC_SET_BPF)`: runs program `prog` on every sample of `event`.
pub fn perf_event_set_bpf(event: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> SysResult<()> {
    /// `_IOW('$', 8, __u32)`.
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
    // SAFETY: PERF_EVENT_IOC_SET_BPF takes the program fd as an integer argument, no pointer.
    let ret = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd() as libc::c_int,
        )
    };
    if ret < 0 {
        Err(fail("ioctl(PERF_EVENT_IOC_SET_BPF)"))
    } else {
        Ok(())
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// A shared memory mapping of a file descriptor, unmapped on drop.
///
/// Architecture invariant: the bytes behind it are shared with the kernel, which may change them
/// at any time (except where the ring protocol says it does not), so this type hands out raw
/// pointers and atomics, never long-lived references to the whole area.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range owned by this value; the memory is process-wide, and
// every access through it goes through atomics or copies, so moving or sharing it across threads
// is sound.
unsafe impl Send for Mapping {}
// SAFETY: see the Send impl; `&Mapping` only allows reads through atomics and copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`; `writable` selects `PROT_READ|PROT_WRITE`
    /// instead of `PROT_READ`.
    pub fn map_shared(
        fd: BorrowedFd<'_>,
        len: usize,
        offset: usize,
        writable: bool,
    ) -> SysResult<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let offset = libc::off_t::try_from(offset).map_err(|_| SysError {
            call: "mmap",
            errno: Errno::EINVAL,
        })?;
        // SAFETY: a fresh mapping at a kernel-chosen address cannot alias any Rust object; the
        // result is checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(fail("mmap"));
        }
        let ptr = std::ptr::NonNull::new(addr.cast::<u8>()).ok_or(SysError {
            call: "mmap",
            errno: Errno::EINVAL,
        })?;
        Ok(Mapping { ptr, len })
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never produced by [`Mapping::map_shared`] on success).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The aligned `u64` at byte `offset`, as an atomic. `None` when it is out of range or
    /// misaligned.
    pub fn atomic_u64(&self, offset: usize) -> Option<&std::sync::atomic::AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: the address is inside the live mapping and 8-aligned (the mapping is
        // page-aligned); AtomicU64 has the layout of u64, and all concurrent accesses to these
        // shared words (the kernel's and ours) are atomic.
        Some(unsafe {
            std::sync::atomic::AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast())
        })
    }

    /// The aligned `u32` at byte `offset`, as an atomic. `None` when out of range or misaligned.
    pub fn atomic_u32(&self, offset: usize) -> Option<&std::sync::atomic::AtomicU32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: as for `atomic_u64`, with 4-byte alignment.
        Some(unsafe {
            std::sync::atomic::AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast())
        })
    }

    /// The bytes `offset..offset + len` as a slice, `None` when out of range. Callers may only
    /// use this for bytes the kernel's ring protocol guarantees it does not modify while the
    /// slice lives (a published, not yet consumed record).
    pub fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the range is inside the live mapping, which outlives the returned borrow of
        // `self`; per the ring protocol the producer does not write these bytes until the
        // consumer position passes them, which the caller does only after dropping the slice.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) })
    }

    /// Copies `out.len()` bytes from `offset` using volatile reads (for areas the kernel may be
    /// writing). Returns false when the range is out of bounds.
    pub fn copy_volatile(&self, offset: usize, out: &mut [u8]) -> bool {
        match offset.checked_add(out.len()) {
            Some(end) if end <= self.len => {}
            _ => return false,
        }
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `offset + i < self.len`, so the address is inside the live mapping; a
            // volatile byte read never tears.
            *byte = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset + i)) };
        }
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns; nothing
        // borrows it once `self` is being dropped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// An epoll instance watching fds for `EPOLLIN`, each with a `u64` token.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> SysResult<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(fail("epoll_create1"));
        }
        // SAFETY: `raw` is a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for `EPOLLIN` (level-triggered), reporting `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> SysResult<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open, and `event` is a valid epoll_event the kernel only reads.
        let ret = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if ret < 0 {
            Err(fail("epoll_ctl"))
        } else {
            Ok(())
        }
    }

    /// Waits up to `timeout` (`None`: forever) and returns the tokens of ready fds (empty on
    /// timeout or when interrupted by a signal).
    pub fn wait(&self, timeout: Option<Duration>) -> SysResult<Vec<u64>> {
        let timeout_ms: libc::c_int = match timeout {
            None => -1,
            Some(t) => {
                // Round up so a sub-millisecond timeout still sleeps rather than spinning.
                let ms = t.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: `events` is a writable array of 64 epoll_event and we pass its length.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), 64, timeout_ms) };
        if n < 0 {
            let errno = last_errno();
            if errno == Errno::EINTR {
                return Ok(Vec::new());
            }
            return Err(SysError {
                call: "epoll_wait",
                errno,
            });
        }
        let n = usize::try_from(n).unwrap_or(0);
        Ok(events[..n].iter().map(|e| e.u64).collect())
    }
}

/// `statfs(path).f_type`.
pub fn statfs_type(path: &Path) -> SysResult<i64> {
    let c_path = path_cstring(path, "statfs")?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `buf` is a writable statfs.
    let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if ret < 0 {
        return Err(fail("statfs"));
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    Ok(buf.f_type as i64)
}

/// mount(2) of a pseudo filesystem `fstype` at `target` with `data` options.
pub fn mount_pseudo(fstype: &str, target: &Path, data: &str) -> SysResult<()> {
    let c_target = path_cstring(target, "mount")?;
    let c_type = CString::new(fstype).map_err(|_| SysError {
        call: "mount",
        errno: Errno::EINVAL,
    })?;
    let c_data = CString::new(data).map_err(|_| SysError {
        call: "mount",
        errno: Errno::EINVAL,
    })?;
    // SAFETY: all pointers are NUL-terminated strings that live across the call.
    let ret = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            c_data.as_ptr().cast(),
        )
    };
    if ret < 0 {
        Err(fail("mount"))
    } else {
        Ok(())
    }
}
