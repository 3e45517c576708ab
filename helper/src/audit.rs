//! The audit log: one line per decision, through `log`. To syslog (authpriv) when `/dev/log` exists,
//! else to stderr. Written here in a few lines rather than pulling a logging backend into the helper.

use std::ffi::CString;
use std::fmt::Write as _;
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
        let line = escape(&format!("{}", record.args()));
        if SYSLOG.load(Ordering::Relaxed) {
            let priority = match record.level() {
                Level::Error => libc::LOG_ERR,
                Level::Warn => libc::LOG_WARNING,
                Level::Info => libc::LOG_INFO,
                Level::Debug | Level::Trace => libc::LOG_DEBUG,
            };
            if let Ok(msg) = CString::new(line) {
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

/// A log or stderr line with every byte outside printable ASCII, and the backslash, written as `\xNN`:
/// a caller's words (a `--br=` value, a user name) can never forge a line, a field or a terminal
/// escape in the log.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn caller_words_cannot_forge_log_lines() {
        assert_eq!(escape("br0"), "br0");
        assert_eq!(
            escape("x\ndecision=done\r\t\x1b[2J\\é"),
            "x\\x0adecision=done\\x0d\\x09\\x1b[2J\\x5c\\xc3\\xa9"
        );
    }
}
