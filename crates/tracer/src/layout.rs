//! The context of a syscall tracepoint, laid out as the kernel lays out its trace record:
//! the common header (`u16 common_type, u8 common_flags, u8 common_preempt_count,
//! i32 common_pid`), then the syscall number, then the arguments (enter) or the return value
//! (exit).
//!
//! Where the layout comes from, in order: the event's tracefs `format` file when it is readable
//! (root only on most systems; it also gives the event id, `common_type`, and the exact number of
//! arguments); else the kernel's BTF (`/sys/kernel/btf/vmlinux`, world-readable: the structs
//! `syscall_trace_enter`/`syscall_trace_exit` for `syscalls:*` and
//! `trace_event_raw_sys_enter`/`_sys_exit` for `raw_syscalls:*`; six arguments, `common_type`
//! 0); else the built-in table below, which is what both say on x86_64 and aarch64 today.

use std::path::{Path, PathBuf};

use crate::TracePoint;

/// One field of the record: byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the record.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// Where a layout was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    /// The event's tracefs `format` file.
    Tracefs,
    /// The kernel's BTF.
    Btf,
    /// The built-in table.
    BuiltIn,
}

/// The record layout of one syscall tracepoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLayout {
    /// The event id the kernel writes in `common_type` (0 when tracefs is not readable).
    pub common_type: u16,
    /// The record's size in bytes: the context buffer a program gets.
    pub size: usize,
    /// `__syscall_nr` (`int`) for `syscalls:*`, `id` (`long`) for `raw_syscalls:*`.
    pub nr: Field,
    /// The first argument's offset and the number of 8-byte arguments (enter events).
    pub args: Option<(usize, usize)>,
    /// `ret` (`long`), for exit events.
    pub ret: Option<Field>,
    /// Where this layout was read from.
    pub source: LayoutSource,
}

/// Offset of `common_pid` in the common header.
const COMMON_PID: usize = 4;

impl EventLayout {
    /// The built-in layout of `point` (with `args` arguments for a `sys_enter_NAME` event).
    pub fn built_in(point: &TracePoint, args: usize) -> EventLayout {
        let (nr, args, ret) = match point {
            TracePoint::SysEnter { .. } => (4, Some((16, args)), None),
            TracePoint::SysExit { .. } => (4, None, Some(16)),
            TracePoint::RawSysEnter => (8, Some((16, 6)), None),
            TracePoint::RawSysExit => (8, None, Some(16)),
        };
        let size = match (args, ret) {
            (Some((at, n)), _) => at + 8 * n,
            (None, Some(at)) => at + 8,
            (None, None) => 16,
        };
        EventLayout {
            common_type: 0,
            size,
            nr: Field {
                offset: 8,
                size: nr,
            },
            args,
            ret: ret.map(|offset| Field { offset, size: 8 }),
            source: LayoutSource::BuiltIn,
        }
    }

    /// Parses a tracefs `format` file's text.
    pub fn from_format(text: &str) -> Option<EventLayout> {
        let mut common_type = 0u16;
        let mut size = 0usize;
        let mut nr = None;
        let mut ret = None;
        let mut args: Option<(usize, usize)> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(id) = line.strip_prefix("ID:") {
                common_type = id.trim().parse().ok()?;
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next()?;
            let mut offset = None;
            let mut field_size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<usize>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    field_size = v.parse::<usize>().ok();
                }
            }
            let (offset, field_size) = (offset?, field_size?);
            size = size.max(offset + field_size);
            let name = decl.rsplit([' ', '*']).next()?;
            let name = name.split('[').next()?;
            if name.starts_with("common_") {
                continue;
            }
            let field = Field {
                offset,
                size: field_size,
            };
            if nr.is_none() && (name == "__syscall_nr" || name == "id") {
                nr = Some(field);
            } else if name == "ret" {
                ret = Some(field);
            } else if nr.is_some() {
                let count = field_size / 8;
                args = Some(match args {
                    None => (offset, count),
                    Some((first, n)) => (first, n + count),
                });
            }
        }
        let nr = nr?;
        Some(EventLayout {
            common_type,
            size,
            nr,
            args: if ret.is_some() {
                None
            } else {
                Some(args.unwrap_or((16, 0)))
            },
            ret,
            source: LayoutSource::Tracefs,
        })
    }

    /// Builds the context record of one event.
    pub fn record(&self, tid: u32, nr: u64, args: &[u64; 6], ret: i64) -> Vec<u8> {
        let mut out = vec![0u8; self.size];
        put(&mut out, 0, 2, u64::from(self.common_type));
        put(&mut out, COMMON_PID, 4, u64::from(tid));
        put(&mut out, self.nr.offset, self.nr.size, nr);
        if let Some((first, count)) = self.args {
            for (i, arg) in args.iter().take(count).enumerate() {
                put(&mut out, first + 8 * i, 8, *arg);
            }
        }
        if let Some(field) = self.ret {
            put(&mut out, field.offset, field.size, ret as u64);
        }
        out
    }
}

fn put(out: &mut [u8], offset: usize, size: usize, value: u64) {
    let bytes = value.to_ne_bytes();
    let size = size.min(8);
    if let Some(dst) = out.get_mut(offset..offset + size) {
        #[cfg(target_endian = "little")]
        dst.copy_from_slice(&bytes[..size]);
        #[cfg(target_endian = "big")]
        dst.copy_from_slice(&bytes[8 - size..]);
    }
}

/// The tracefs events directory, when readable by this process.
pub fn tracefs_events() -> Option<PathBuf> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|dir| std::fs::read_dir(dir.join("syscalls")).is_ok())
}

/// The tracefs `format` file of `point` under `events`.
pub fn format_path(events: &Path, point: &TracePoint) -> PathBuf {
    events
        .join(point.category())
        .join(point.event_name())
        .join("format")
}

/// Offsets the kernel's BTF gives for the four record structs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BtfLayouts {
    /// `syscall_trace_enter`: `nr`, first of `args`.
    pub enter: Option<(Field, usize)>,
    /// `syscall_trace_exit`: `nr`, `ret`.
    pub exit: Option<(Field, Field)>,
    /// `trace_event_raw_sys_enter`: `id`, first of `args`.
    pub raw_enter: Option<(Field, usize)>,
    /// `trace_event_raw_sys_exit`: `id`, `ret`.
    pub raw_exit: Option<(Field, Field)>,
}

impl BtfLayouts {
    /// Reads `/sys/kernel/btf/vmlinux`; `None` when it is missing or not parseable.
    pub fn from_kernel() -> Option<BtfLayouts> {
        let blob = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
        BtfLayouts::parse(&blob)
    }

    /// Parses a raw BTF blob for the four structs.
    pub fn parse(blob: &[u8]) -> Option<BtfLayouts> {
        let btf = btf::Types::parse(blob)?;
        let pair = |name: &str, a: &str, b: &str| {
            let members = btf.struct_members(name)?;
            let find = |m: &str| {
                members
                    .iter()
                    .find(|(n, _, _)| n == m)
                    .map(|(_, o, s)| (0, *o, *s))
            };
            let (_, a_off, a_size) = find(a)?;
            let (_, b_off, b_size) = find(b)?;
            Some((
                Field {
                    offset: a_off,
                    size: a_size,
                },
                Field {
                    offset: b_off,
                    size: b_size,
                },
            ))
        };
        Some(BtfLayouts {
            enter: pair("syscall_trace_enter", "nr", "args").map(|(a, b)| (a, b.offset)),
            exit: pair("syscall_trace_exit", "nr", "ret"),
            raw_enter: pair("trace_event_raw_sys_enter", "id", "args").map(|(a, b)| (a, b.offset)),
            raw_exit: pair("trace_event_raw_sys_exit", "id", "ret"),
        })
    }

    /// The layout of `point` from these offsets (six arguments for enter events).
    pub fn layout(&self, point: &TracePoint) -> Option<EventLayout> {
        let (nr, args, ret) = match point {
            TracePoint::SysEnter { .. } => self.enter.map(|(nr, a)| (nr, Some((a, 6)), None))?,
            TracePoint::SysExit { .. } => self.exit.map(|(nr, r)| (nr, None, Some(r)))?,
            TracePoint::RawSysEnter => self.raw_enter.map(|(nr, a)| (nr, Some((a, 6)), None))?,
            TracePoint::RawSysExit => self.raw_exit.map(|(nr, r)| (nr, None, Some(r)))?,
        };
        let size = match (args, ret) {
            (Some((at, n)), _) => at + 8 * n,
            (_, Some(r)) => r.offset + r.size,
            _ => return None,
        };
        Some(EventLayout {
            common_type: 0,
            size,
            nr,
            args,
            ret,
            source: LayoutSource::Btf,
        })
    }
}

/// Just enough BTF to find a struct's members: names, byte offsets and sizes.
mod btf {
    const MAGIC: u16 = 0xeb9f;

    /// One type's kind, size-or-type and members (for structs).
    struct Type {
        name: u32,
        kind: u32,
        size_or_type: u32,
        /// Struct members: (name offset, type id, bit offset).
        members: Vec<(u32, u32, u32)>,
    }

    pub(super) struct Types<'a> {
        types: Vec<Type>,
        strings: &'a [u8],
    }

    fn u32_at(data: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    }

    impl<'a> Types<'a> {
        pub(super) fn parse(blob: &'a [u8]) -> Option<Types<'a>> {
            if u16::from_le_bytes([*blob.first()?, *blob.get(1)?]) != MAGIC {
                return None;
            }
            let hdr_len = u32_at(blob, 4)? as usize;
            let (type_off, type_len) = (u32_at(blob, 8)? as usize, u32_at(blob, 12)? as usize);
            let (str_off, str_len) = (u32_at(blob, 16)? as usize, u32_at(blob, 20)? as usize);
            let data = blob.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
            let strings = blob.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
            let mut types = vec![Type {
                name: 0,
                kind: 0,
                size_or_type: 0,
                members: Vec::new(),
            }];
            let mut at = 0;
            while at + 12 <= data.len() {
                let name = u32_at(data, at)?;
                let info = u32_at(data, at + 4)?;
                let size_or_type = u32_at(data, at + 8)?;
                at += 12;
                let vlen = (info & 0xffff) as usize;
                let kind = (info >> 24) & 0x1f;
                let kind_flag = info >> 31 == 1;
                let mut members = Vec::new();
                let extra = match kind {
                    1 | 14 | 17 => 4,
                    3 => 12,
                    4 | 5 => {
                        for m in 0..vlen {
                            let base = at + 12 * m;
                            let offset = u32_at(data, base + 8)?;
                            let bits = if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            };
                            members.push((u32_at(data, base)?, u32_at(data, base + 4)?, bits));
                        }
                        12 * vlen
                    }
                    6 | 13 => 8 * vlen,
                    15 | 19 => 12 * vlen,
                    2 | 7..=12 | 16 | 18 => 0,
                    _ => return None,
                };
                at += extra;
                types.push(Type {
                    name,
                    kind,
                    size_or_type,
                    members,
                });
            }
            Some(Types { types, strings })
        }

        fn name(&self, offset: u32) -> &[u8] {
            let rest = self.strings.get(offset as usize..).unwrap_or(&[]);
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            &rest[..end]
        }

        fn size(&self, id: u32) -> Option<usize> {
            let mut id = id;
            for _ in 0..32 {
                let t = self.types.get(id as usize)?;
                match t.kind {
                    1 | 4 | 5 | 6 | 16 | 19 => return Some(t.size_or_type as usize),
                    2 => return Some(8),
                    // Arrays (flexible ones have no size of their own): the element's size.
                    3 => return Some(0),
                    8..=11 | 18 => id = t.size_or_type,
                    _ => return None,
                }
            }
            None
        }

        /// `(name, byte offset, size)` of each member of the struct `name`.
        pub(super) fn struct_members(&self, name: &str) -> Option<Vec<(String, usize, usize)>> {
            let t = self
                .types
                .iter()
                .find(|t| t.kind == 4 && self.name(t.name) == name.as_bytes())?;
            t.members
                .iter()
                .map(|&(n, ty, bits)| {
                    Some((
                        String::from_utf8_lossy(self.name(n)).into_owned(),
                        (bits / 8) as usize,
                        self.size(ty)?,
                    ))
                })
                .collect()
        }
    }
}
