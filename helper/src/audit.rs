//! The audit log: one line per decision, through `log`. To syslog (authpriv) when `/dev/log` exists,
//! else to stderr. Written here in a few lines rather than pulling a logging backend into the helper.

use std::ffi::CString;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::sys;

struct Audit;

/// Whether records go to syslog (set once, before the logger is installed).
static SYSLOG: AtomicBool = AtomicBool::new(false);
static AUDIT: Audit = Audit;

impl Log for Audit {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let line = format!("{}", record.args());
        if SYSLOG.load(Ordering::Relaxed) {
            let priority = match record.level() {
                Level::Error => libc::LOG_ERR,
                Level::Warn => libc::LOG_WARNING,
                Level::Info => libc::LOG_INFO,
                Level::Debug | Level::Trace => libc::LOG_DEBUG,
            };
            // A NUL cannot reach a log line from the caller (names are validated), but never panic on it.
            let clean: String = line.chars().map(|c| if c == '\0' { '?' } else { c }).collect();
            if let Ok(msg) = CString::new(clean) {
                sys::syslog(priority, &msg);
            }
        } else {
            // One write(2) per line: stderr is unbuffered, and writeln! would write each piece.
            let _ = std::io::stderr()
                .lock()
                .write_all(format!("vmpriv-helper: {line}\n").as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the audit logger. Call before Landlock (syslog connects now). `quiet_stderr` keeps decision
/// lines off stderr (QEMU mode: stderr is for the one failure line QEMU and libvirt show).
pub fn init(quiet_stderr: bool) {
    let syslog = std::path::Path::new("/dev/log").exists();
    if syslog {
        sys::open_syslog();
    }
    let level = if syslog || !quiet_stderr {
        LevelFilter::Info
    } else {
        LevelFilter::Off
    };
    SYSLOG.store(syslog, Ordering::Relaxed);
    if log::set_logger(&AUDIT).is_ok() {
        log::set_max_level(level);
    }
}
