//! `bpf_trace_printk` on the user engine: the kernel's limited printf ([`format`]) and the trace
//! pipe it writes to ([`trace_pipe_path`]): a plain file under the user engine's pin root, one
//! line per call, appended, that [`TracePipeReader`] (`bpfmaps trace`) consumes like the
//! kernel's `trace_pipe`: what is read is gone. Writers append a whole line and the reader reads
//! everything then truncates the file, both under an exclusive `flock` on the file, so no line
//! is lost or split. Lines written while the file holds [`TRACE_PIPE_MAX_BYTES`] unread bytes
//! are dropped, as a full kernel trace buffer drops events.
//!
//! Line format (close to the kernel's `trace_pipe`):
//! `<comm>-<tid> [<cpu>] <seconds>.<micros>: bpf_trace_printk: <message>`.
//!
//! The format language is the kernel's: at most 3 conversions, each `%` followed by optional
//! flags (`-`, `0`, `+`, ` `, `#`), an optional width, an optional length (`h`, `hh`, `l`, `ll`,
//! `z`) and one of `d i u x X c s p %`. `%s` reads a NUL-terminated string from the program's
//! regions (`(efault)` when it cannot). Anything else makes the helper return `-EINVAL`, as the
//! kernel does.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bpfmaps_abi::Errno;
use bpfmaps_vm::{HelperError, Memory};

use crate::program::ProgramInner;

/// Name of the trace pipe file under the pin root.
pub const TRACE_PIPE_NAME: &str = "trace_pipe";
/// Unread bytes the trace pipe holds at most; later lines are dropped until a reader drains it.
pub const TRACE_PIPE_MAX_BYTES: u64 = 4 << 20;
/// The longest string `%s` prints.
const MAX_STRING: usize = 256;

/// The trace pipe file of the user engine whose pin root is `root`.
pub fn trace_pipe_path(root: &Path) -> PathBuf {
    root.join(TRACE_PIPE_NAME)
}

/// `flock(operation)` on `file`, retrying on EINTR.
fn flock(file: &File, operation: i32) -> io::Result<()> {
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call; flock only changes
        // the lock state of its open file description.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Appends one whole line to the trace pipe at `path` (creating it), unless it is full.
fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    flock(&file, libc::LOCK_EX)?;
    let result = if file.metadata()?.len() >= TRACE_PIPE_MAX_BYTES {
        Ok(())
    } else {
        (&file).write_all(line)
    };
    // Closing the file releases the lock too; unlocking first only shortens the hold.
    let _ = flock(&file, libc::LOCK_UN);
    result
}

/// A consumer of a user engine's trace pipe: each [`TracePipeReader::take`] returns the lines
/// written since the previous one (by any process) and removes them from the pipe.
#[derive(Debug)]
pub struct TracePipeReader {
    file: File,
    path: PathBuf,
}

impl TracePipeReader {
    /// Opens (creating when missing) the trace pipe of the pin root `root`.
    pub fn open(root: &Path) -> io::Result<TracePipeReader> {
        let path = trace_pipe_path(root);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        Ok(TracePipeReader { file, path })
    }

    /// The trace pipe file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every unread whole line, oldest first (empty when there is none), consumed.
    pub fn take(&mut self) -> io::Result<Vec<u8>> {
        // Cheap check without the lock: most polls find nothing.
        if self.file.metadata()?.len() == 0 {
            return Ok(Vec::new());
        }
        flock(&self.file, libc::LOCK_EX)?;
        let result = self.take_locked();
        let _ = flock(&self.file, libc::LOCK_UN);
        result
    }

    fn take_locked(&mut self) -> io::Result<Vec<u8>> {
        let mut text = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut text)?;
        self.file.set_len(0)?;
        Ok(text)
    }
}

/// Why a format string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFormat;

/// Formats `fmt` (without its NUL) with up to three arguments; `read_string` reads a `%s`
/// argument (a guest address). `Err` for formats the kernel refuses.
pub fn format(
    fmt: &[u8],
    args: [u64; 3],
    read_string: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, BadFormat> {
    let mut out = Vec::new();
    let mut next_arg = 0usize;
    let mut i = 0usize;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push(b'%');
            i += 1;
            continue;
        }
        let mut left = false;
        let mut zero = false;
        while let Some(&flag) = fmt.get(i) {
            match flag {
                b'-' => left = true,
                b'0' => zero = true,
                b'+' | b' ' | b'#' => {}
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        while let Some(&digit) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            width = width
                .saturating_mul(10)
                .saturating_add(usize::from(digit - b'0'))
                .min(64);
            i += 1;
        }
        let mut bits = 32u32;
        loop {
            match fmt.get(i) {
                Some(b'l') | Some(b'z') => bits = 64,
                Some(b'h') => bits = bits.min(16),
                _ => break,
            }
            i += 1;
        }
        let conv = *fmt.get(i).ok_or(BadFormat)?;
        i += 1;
        let arg = *args.get(next_arg).ok_or(BadFormat)?;
        next_arg += 1;
        let mask = |v: u64| if bits == 64 { v } else { v & 0xffff_ffff };
        let text: Vec<u8> = match conv {
            b'd' | b'i' => {
                let v = if bits == 64 {
                    arg as i64
                } else {
                    i64::from(arg as u32 as i32)
                };
                v.to_string().into_bytes()
            }
            b'u' => mask(arg).to_string().into_bytes(),
            b'x' => format!("{:x}", mask(arg)).into_bytes(),
            b'X' => format!("{:X}", mask(arg)).into_bytes(),
            b'c' => vec![arg as u8],
            b'p' => format!("0x{arg:x}").into_bytes(),
            b's' => read_string(arg).unwrap_or_else(|| b"(efault)".to_vec()),
            _ => return Err(BadFormat),
        };
        let pad = width.saturating_sub(text.len());
        if left {
            out.extend_from_slice(&text);
            out.extend(std::iter::repeat_n(b' ', pad));
        } else {
            let fill = if zero && conv != b's' && conv != b'c' {
                b'0'
            } else {
                b' '
            };
            if fill == b'0' && text.first() == Some(&b'-') {
                out.push(b'-');
                out.extend(std::iter::repeat_n(b'0', pad));
                out.extend_from_slice(&text[1..]);
            } else {
                out.extend(std::iter::repeat_n(fill, pad));
                out.extend_from_slice(&text);
            }
        }
    }
    Ok(out)
}

/// The `bpf_trace_printk(fmt, fmt_size, arg1, arg2, arg3)` helper: returns the number of bytes
/// of the message, `-EINVAL` for a format that is not NUL-terminated within `fmt_size` or that
/// the kernel refuses.
pub(crate) fn trace_printk(
    program: &ProgramInner,
    cpu: u32,
    args: [u64; 5],
    mem: &mut Memory<'_>,
) -> Result<u64, HelperError> {
    let fmt = mem.read_vec(args[0], args[1] & 0xffff_ffff)?;
    let Some(end) = fmt.iter().position(|&b| b == 0) else {
        return Ok(Errno::EINVAL.as_helper_return());
    };
    let mut read_string = |addr: u64| -> Option<Vec<u8>> {
        let mut s = Vec::new();
        while s.len() < MAX_STRING {
            match mem.load::<1>(addr.wrapping_add(s.len() as u64)) {
                Ok(0) => return Some(s),
                Ok(b) => s.push(b as u8),
                Err(_) => return if s.is_empty() { None } else { Some(s) },
            }
        }
        Some(s)
    };
    let Ok(message) = format(&fmt[..end], [args[2], args[3], args[4]], &mut read_string) else {
        return Ok(Errno::EINVAL.as_helper_return());
    };
    let comm = crate::helpers::current_comm();
    let comm_len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let tid = crate::helpers::current_pid_tgid() & 0xffff_ffff;
    let now = crate::helpers::clock_ns(libc::CLOCK_MONOTONIC);
    let mut line = format!(
        "{}-{tid} [{cpu:03}] {}.{:06}: bpf_trace_printk: ",
        String::from_utf8_lossy(&comm[..comm_len]),
        now / 1_000_000_000,
        now % 1_000_000_000 / 1000
    )
    .into_bytes();
    line.extend_from_slice(&message);
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    let path = trace_pipe_path(&program.shared.store_root);
    // A trace pipe that cannot be written loses the line, as a full kernel trace buffer would.
    let _ = append_line(&path, &line);
    Ok(message.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_consumes_whole_lines_in_order() {
        let root = std::env::temp_dir().join(format!("bpfmaps-trace-unit-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("root");
        let mut reader = TracePipeReader::open(&root).expect("open");
        let path = trace_pipe_path(&root);
        assert_eq!(reader.path(), path);
        assert_eq!(reader.take().expect("take"), b"");
        append_line(&path, b"one\n").expect("append");
        append_line(&path, b"two\n").expect("append");
        assert_eq!(reader.take().expect("take"), b"one\ntwo\n");
        assert_eq!(reader.take().expect("take"), b"");
        append_line(&path, b"three\n").expect("append");
        assert_eq!(reader.take().expect("take"), b"three\n");
        let _ = std::fs::remove_dir_all(&root);
    }

    fn check(fmt: &str, args: [u64; 3], expect: Option<&str>) {
        let got = format(fmt.as_bytes(), args, &mut |addr| {
            (addr == 7).then(|| b"str".to_vec())
        });
        assert_eq!(
            got.ok().map(|v| String::from_utf8(v).unwrap()).as_deref(),
            expect,
            "{fmt}"
        );
    }

    #[test]
    fn formats_the_kernel_subset() {
        check("a %d b", [(-5i64) as u64, 0, 0], Some("a -5 b"));
        check(
            "%u %x %llx",
            [u64::MAX, 255, 0x1_0000_0000],
            Some("4294967295 ff 100000000"),
        );
        check("%05d|%-3d|", [(-42i64) as u64, 5, 0], Some("-0042|5  |"));
        check(
            "%lld|%5d|%-4u",
            [(-1i64) as u64, 42, 7],
            Some("-1|   42|7   "),
        );
        check("%s and %s", [7, 8, 0], Some("str and (efault)"));
        check("100%% %c", [b'z' as u64, 0, 0], Some("100% z"));
        check("%p", [0x10, 0, 0], Some("0x10"));
        check("%q", [0, 0, 0], None);
        check("%d %d %d %d", [1, 2, 3], None);
        check("%", [0, 0, 0], None);
    }
}
