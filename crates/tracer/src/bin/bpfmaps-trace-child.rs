//! The test child of the tracer's tests: makes a known set of syscalls.
//!
//! ```text
//! bpfmaps-trace-child opens PATH N          open(2)s PATH N times (openat), from the main thread
//! bpfmaps-trace-child threads PATH N T      N opens in the main thread, T threads with N each
//! bpfmaps-trace-child tree PATH N           N opens, then a child `threads PATH N 8`
//! bpfmaps-trace-child missing PATH N        N opens of a missing PATH; exits 0 when all failed
//! bpfmaps-trace-child spawn ARGS...         runs itself with ARGS as a child; exits with its code
//! bpfmaps-trace-child exit CODE             exits with CODE
//! bpfmaps-trace-child kill-self SIG         sends itself signal SIG
//! bpfmaps-trace-child wait-term             prints "ready", waits for a signal (dies of it)
//! bpfmaps-trace-child restart MS            a SA_RESTART SIGALRM every millisecond while a read of a
//!                                           pipe waits MS ms for a writer thread; prints
//!                                           "read N bytes after K signals"; exits 0 when
//!                                           the read got the 5 bytes and signals came
//! bpfmaps-trace-child stop-cont             stops itself with SIGSTOP, a thread sends SIGCONT;
//!                                           prints "continued"
//! bpfmaps-trace-child loop getppid|openat N prints the mean ns per call of N calls
//! ```
//!
//! Every process appends its pid to the file named by `TRACE_CHILD_PIDS`, when set.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn record_pid() {
    if let Some(file) = std::env::var_os("TRACE_CHILD_PIDS") {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .expect("open the pid file");
        writeln!(f, "{}", std::process::id()).expect("write the pid file");
    }
}

fn opens(path: &str, n: u32) -> u32 {
    let mut errors = 0;
    for _ in 0..n {
        if std::fs::File::open(path).is_err() {
            errors += 1;
        }
    }
    errors
}

static ALARMS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    match arg(0) {
        "opens" => {
            record_pid();
            opens(arg(1), num(2) as u32);
        }
        "threads" => {
            record_pid();
            let path = arg(1).to_owned();
            let n = num(2) as u32;
            opens(&path, n);
            let handles: Vec<_> = (0..num(3))
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || opens(&path, n))
                })
                .collect();
            for h in handles {
                h.join().expect("thread");
            }
        }
        "tree" => {
            // N opens here, then a child with 8 threads making N opens each and N in its main.
            record_pid();
            opens(arg(1), num(2) as u32);
            let me = std::env::current_exe().expect("current_exe");
            let status = std::process::Command::new(me)
                .args(["threads", arg(1), arg(2), "8"])
                .status()
                .expect("spawn");
            std::process::exit(status.code().unwrap_or(1));
        }
        "missing" => {
            record_pid();
            let errors = opens(arg(1), num(2) as u32);
            std::process::exit(i32::from(errors != num(2) as u32));
        }
        "spawn" => {
            record_pid();
            let me = std::env::current_exe().expect("current_exe");
            let status = std::process::Command::new(me)
                .args(&args[1..])
                .status()
                .expect("spawn");
            std::process::exit(status.code().unwrap_or(1));
        }
        "exit" => std::process::exit(num(1) as i32),
        "kill-self" => {
            // SAFETY: raise has no memory preconditions.
            unsafe { libc::raise(num(1) as i32) };
            std::thread::sleep(Duration::from_secs(5));
        }
        "wait-term" => {
            println!("ready");
            std::io::stdout().flush().expect("flush");
            std::thread::sleep(Duration::from_secs(30));
            std::process::exit(3);
        }
        "restart" => {
            // SAFETY: installs a handler that only touches an atomic; SA_RESTART.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_alarm as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
                let tick = libc::itimerval {
                    it_interval: libc::timeval {
                        tv_sec: 0,
                        tv_usec: 1000,
                    },
                    it_value: libc::timeval {
                        tv_sec: 0,
                        tv_usec: 1000,
                    },
                };
                libc::setitimer(libc::ITIMER_REAL, &tick, std::ptr::null_mut());
            }
            let mut fds = [0i32; 2];
            // SAFETY: pipe writes two fds to the live array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let ms = num(1);
            let writer = fds[1];
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                // SAFETY: writes 5 bytes from a static.
                unsafe { libc::write(writer, b"hello".as_ptr().cast(), 5) };
            });
            let mut buf = [0u8; 16];
            // SAFETY: reads into a live local buffer.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            t.join().expect("writer");
            let alarms = ALARMS.load(Ordering::SeqCst);
            println!("read {n} bytes after {alarms} signals");
            std::process::exit(if n == 5 && alarms > 0 { 0 } else { 1 });
        }
        "stop-cont" => {
            let pid = std::process::id() as i32;
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            });
            // SAFETY: raise has no memory preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
            t.join().expect("thread");
            println!("continued");
            std::process::exit(0);
        }
        "loop" => {
            let n = num(2).max(1);
            let started = Instant::now();
            match arg(1) {
                "getppid" => {
                    for _ in 0..n {
                        // SAFETY: getppid has no preconditions.
                        unsafe { libc::getppid() };
                    }
                }
                _ => {
                    let path = c"/dev/null";
                    for _ in 0..n {
                        // SAFETY: openat on a static NUL-terminated path; the fd is closed.
                        unsafe {
                            let fd = libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
                            libc::close(fd);
                        }
                    }
                }
            }
            let ns = started.elapsed().as_nanos() / u128::from(n);
            println!("{ns}");
        }
        other => {
            eprintln!("bpfmaps-trace-child: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
