//! The audit log: one line per decision, through `log`. To syslog (authpriv) when `/dev/log` exists,
//! else to the systemd journal, else nowhere (never to the caller's stderr). Written here in a few lines rather than pulling a logging backend into the helper.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::sys;

/// syslog's authpriv facility (`LOG_AUTHPRIV >> 3`), as the journal's SYSLOG_FACILITY field wants it.
const FACILITY_AUTHPRIV: i32 = libc::LOG_AUTHPRIV >> 3;

struct Audit;

/// Where records go, chosen once before the logger is installed: syslog when `/dev/log` exists, else
/// the systemd journal's socket when it exists, else nowhere. Never the caller's stderr: it gets one
/// line on refusal and nothing on success, and the log's details (which the uniform `Denied` reply hides
/// on purpose) are not the caller's to read.
static SINK: OnceLock<Sink> = OnceLock::new();
static AUDIT: Audit = Audit;

enum Sink {
    Syslog,
    Journal(UnixDatagram),
}

impl Log for Audit {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let line = escape(&format!("{}", record.args()));
        let priority = match record.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        match SINK.get() {
            Some(Sink::Syslog) => {
                if let Ok(msg) = CString::new(line) {
                    sys::syslog(priority, &msg);
                }
            }
            Some(Sink::Journal(sock)) => {
                // The journal's native protocol: KEY=VALUE lines in one datagram (the line is escaped,
                // so it holds no newline).
                let entry = format!(
                    "MESSAGE={line}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=vmpriv-helper\nSYSLOG_FACILITY={FACILITY_AUTHPRIV}\n"
                );
                let _ = sock.send(entry.as_bytes());
            }
            None => {}
        }
    }

    fn flush(&self) {}
}

/// A log or stderr line with every byte outside printable ASCII, and the backslash, written as `\xNN`:
/// a caller's words (a `--br=` value, a user name) can never forge a line, a field or a terminal
/// escape in the log.
pub(crate) fn escape(text: &str) -> String {
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

/// Installs the audit logger. Call before Landlock: the syslog or journal socket connects now.
pub(crate) fn init() {
    let sink = if std::path::Path::new("/dev/log").exists() {
        sys::open_syslog();
        Some(Sink::Syslog)
    } else {
        UnixDatagram::unbound()
            .and_then(|s| s.connect(JOURNAL_SOCKET).map(|()| s))
            .ok()
            .map(Sink::Journal)
    };
    if let Some(sink) = sink {
        let _ = SINK.set(sink);
        if log::set_logger(&AUDIT).is_ok() {
            log::set_max_level(LevelFilter::Info);
        }
    }
}

/// The systemd journal's native socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

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
