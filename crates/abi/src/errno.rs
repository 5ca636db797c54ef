//! Errno values as the kernel returns them, with their names and meanings.
//!
//! Owns the [`Errno`] newtype and the table of names. It does not know where an errno came from:
//! both engines report through it, so a differential test can compare them with `==`.

use std::fmt;

/// A positive errno value, as the bpf(2) syscall reports it through `errno` and as BPF helpers
/// return it negated.
///
/// `ENOTSUPP` (524) is kernel-internal but leaks to user space from several map operations; it is
/// distinct from `EOPNOTSUPP` (95).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($value), "): ", $text, ".")]
                pub const $name: Errno = Errno($value);
            )*

            /// The symbolic name (`"EEXIST"`), or `None` for a value this table does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The meaning as `strerror` words it (`"File exists"`), or `None` when unknown.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "Input/output error";
    ENXIO = 6, "No such device or address";
    E2BIG = 7, "Argument list too long";
    EBADF = 9, "Bad file descriptor";
    EAGAIN = 11, "Resource temporarily unavailable";
    ENOMEM = 12, "Cannot allocate memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    ENODEV = 19, "No such device";
    ENOTDIR = 20, "Not a directory";
    EINVAL = 22, "Invalid argument";
    ENOSPC = 28, "No space left on device";
    ERANGE = 34, "Numerical result out of range";
    EDEADLK = 35, "Resource deadlock avoided";
    ENOSYS = 38, "Function not implemented";
    ENOTEMPTY = 39, "Directory not empty";
    ELOOP = 40, "Too many levels of symbolic links";
    EOPNOTSUPP = 95, "Operation not supported";
    ETIMEDOUT = 110, "Connection timed out";
    ENOTSUPP = 524, "Operation is not supported";
}

impl Errno {
    /// The value a BPF helper returns for this error: the errno negated, as a 64-bit register.
    pub fn as_helper_return(self) -> u64 {
        i64::from(-self.0) as u64
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    /// Formats as `EEXIST (File exists)`, the form the CLI prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.description()) {
            (Some(name), Some(text)) => write!(f, "{name} ({text})"),
            _ => write!(f, "errno {}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_errno_and_its_meaning() {
        assert_eq!(Errno::EEXIST.to_string(), "EEXIST (File exists)");
        assert_eq!(
            Errno(524).to_string(),
            "ENOTSUPP (Operation is not supported)"
        );
        assert_eq!(Errno(4000).to_string(), "errno 4000");
    }

    #[test]
    fn helper_return_is_negated() {
        assert_eq!(Errno::ENOENT.as_helper_return() as i64, -2);
    }
}
