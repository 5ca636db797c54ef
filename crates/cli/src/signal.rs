//! Ctrl-C (SIGINT) and SIGTERM as a flag the long-running commands poll, so they stop cleanly and
//! detach their programs instead of dying mid-way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Installs the handler and returns the flag it sets.
pub fn on_interrupt() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// Sleeps until `until`, waking early when `flag` is set; returns true when it was.
pub fn sleep_until(until: Instant, flag: &AtomicBool) -> bool {
    loop {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}
