//! `enable_syslog`: log lines sent to the local syslog daemon as RFC 3164 datagrams over the
//! unix datagram socket `/dev/log` (or `$MUSTER_SYSLOG_SOCKET`, so tests can capture them).
//!
//! Each tracing event becomes one datagram `<PRI>Mmm dd hh:mm:ss HOST muster[PID]: message`,
//! with PRI = facility × 8 + severity (facility from `syslog_facility`, severity from the
//! event's level).
//!
//! Invariants:
//! - logging never blocks and never fails the agent: the socket is non-blocking, a datagram
//!   the daemon cannot take right now is dropped (and counted), and a missing socket is
//!   reported once on stderr and retried every [`RECONNECT_EVERY`] while events keep coming
//!   (a database host must not refuse to start because syslog is down);
//! - a message is at most [`MAX_MESSAGE`] bytes (cut at a character boundary);
//! - the lock around the socket is held only for one non-blocking `send`, never across an
//!   `.await` (writers run inside tracing's synchronous event dispatch).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// The socket syslog daemons listen on.
pub const DEFAULT_SOCKET: &str = "/dev/log";
/// Environment variable overriding [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "MUSTER_SYSLOG_SOCKET";
/// The longest message sent (rsyslog's default maximum is 8 KiB per message).
pub const MAX_MESSAGE: usize = 8 * 1024;
/// How often a missing or broken socket is retried.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(10);
/// The tag in every message.
const TAG: &str = "muster";

/// A syslog facility code (`syslog_facility`).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name.to_ascii_uppercase().as_str() {
        "KERN" => 0,
        "USER" => 1,
        "MAIL" => 2,
        "DAEMON" => 3,
        "AUTH" => 4,
        "SYSLOG" => 5,
        "LPR" => 6,
        "NEWS" => 7,
        "UUCP" => 8,
        "CRON" => 9,
        "AUTHPRIV" => 10,
        "FTP" => 11,
        "LOCAL0" => 16,
        "LOCAL1" => 17,
        "LOCAL2" => 18,
        "LOCAL3" => 19,
        "LOCAL4" => 20,
        "LOCAL5" => 21,
        "LOCAL6" => 22,
        "LOCAL7" => 23,
        _ => return None,
    })
}

/// The RFC 5424 severity of a tracing level (trace and debug are both `debug`).
pub fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// One RFC 3164 message: `<PRI>TIMESTAMP HOST TAG[PID]: MESSAGE`. The message is cut to
/// [`MAX_MESSAGE`] bytes and loses its trailing newline; the timestamp is `Mmm dd hh:mm:ss`
/// with a space-padded day.
pub fn format_message(
    facility: u8,
    severity: u8,
    timestamp: &str,
    host: &str,
    pid: u32,
    message: &str,
) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity);
    // The text formatter right-aligns the level (" INFO"); syslog lines start at the text.
    let message = truncate(
        message.trim_start().trim_end_matches(['\n', '\r']),
        MAX_MESSAGE,
    );
    // A hostname with a space would shift the fields; RFC 3164 hostnames have none.
    let host = if host.is_empty() || host.contains(' ') {
        "localhost"
    } else {
        host
    };
    format!("<{pri}>{timestamp} {host} {TAG}[{pid}]: {message}")
}

/// The RFC 3164 timestamp of a local time.
pub fn timestamp<Tz: chrono::TimeZone>(at: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    at.format("%b %e %H:%M:%S").to_string()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where the syslog socket is: `$MUSTER_SYSLOG_SOCKET`, else `/dev/log`.
pub fn socket_path() -> PathBuf {
    socket_path_from(std::env::var_os(SOCKET_ENV))
}

fn socket_path_from(env: Option<std::ffi::OsString>) -> PathBuf {
    env.filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// The `MakeWriter` for a `tracing_subscriber::fmt` layer that sends every event to syslog.
#[derive(Clone, Debug)]
pub struct SyslogWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    facility: u8,
    host: String,
    pid: u32,
    conn: Mutex<Conn>,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Conn {
    socket: Option<UnixDatagram>,
    /// No connection attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    /// The outage was reported on stderr.
    warned: bool,
}

impl SyslogWriter {
    /// A writer to the socket at `path` with the given facility code. It connects lazily,
    /// on the first event, so a missing socket costs nothing until something is logged.
    pub fn new(path: &Path, facility: u8, host: &str) -> Self {
        SyslogWriter {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                facility,
                host: host.to_owned(),
                pid: std::process::id(),
                conn: Mutex::new(Conn::default()),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Messages dropped because the socket was missing or full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Whether the socket is connected now.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.lock().socket.is_some()
    }

    /// Sends one message with the given severity (used by the tracing writer; public for
    /// tests and for messages logged before tracing is set up).
    pub fn send(&self, severity: u8, message: &str) {
        let stamp = timestamp(&chrono::Local::now());
        let line = format_message(
            self.inner.facility,
            severity,
            &stamp,
            &self.inner.host,
            self.inner.pid,
            message,
        );
        self.inner.send_datagram(line.as_bytes());
    }
}

impl Inner {
    fn send_datagram(&self, datagram: &[u8]) {
        let mut conn = self.conn.lock();
        let now = Instant::now();
        if conn.socket.is_none() && conn.retry_at.is_none_or(|at| now >= at) {
            match connect(&self.path) {
                Ok(socket) => {
                    if conn.warned {
                        eprintln!(
                            "muster: syslog socket {} is back; logging to syslog resumed",
                            self.path.display()
                        );
                    }
                    conn.socket = Some(socket);
                    conn.retry_at = None;
                    conn.warned = false;
                }
                Err(e) => {
                    if !conn.warned {
                        // stderr, once per outage: logging through tracing here would recurse.
                        eprintln!(
                            "muster: cannot reach syslog at {}: {e}; syslog messages are \
                             dropped until it is back (retrying every {}s)",
                            self.path.display(),
                            RECONNECT_EVERY.as_secs()
                        );
                        conn.warned = true;
                    }
                    conn.retry_at = Some(now + RECONNECT_EVERY);
                }
            }
        }
        let Some(socket) = &conn.socket else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match socket.send(datagram) {
            Ok(_) => {}
            // The daemon is slow: drop this one rather than stall the caller.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The daemon restarted (ECONNREFUSED) or the socket went away: reconnect at once
            // on the next message, and report it if that fails too.
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                conn.socket = None;
                conn.retry_at = None;
            }
        }
    }
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The per-event writer: collects the formatted event and sends it as one datagram when
/// tracing drops it.
pub struct SyslogLine {
    writer: SyslogWriter,
    severity: u8,
    buf: Vec<u8>,
}

impl io::Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Bounded: anything past the maximum message size is discarded here already.
        let room = (MAX_MESSAGE + 4).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        self.writer.send(self.severity, &text);
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            writer: self.clone(),
            severity: severity(&Level::INFO),
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        SyslogLine {
            writer: self.clone(),
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::io::Write;

    #[test]
    fn pri_combines_facility_and_severity() {
        let local0 = facility_code("LOCAL0").unwrap();
        assert_eq!(local0, 16);
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("DAEMON"), Some(3));
        assert_eq!(facility_code("NOPE"), None);
        let line = format_message(
            local0,
            severity(&Level::ERROR),
            "Jan  2 03:04:05",
            "h",
            1,
            "x",
        );
        assert!(line.starts_with("<131>"), "{line}");
        let line = format_message(
            local0,
            severity(&Level::WARN),
            "Jan  2 03:04:05",
            "h",
            1,
            "x",
        );
        assert!(line.starts_with("<132>"), "{line}");
        let line = format_message(3, severity(&Level::INFO), "Jan  2 03:04:05", "h", 1, "x");
        assert!(line.starts_with("<30>"), "{line}");
        assert_eq!(severity(&Level::DEBUG), 7);
        assert_eq!(severity(&Level::TRACE), 7);
    }

    #[test]
    fn rfc3164_layout() {
        let at = chrono::FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 3, 7, 9, 5, 3)
            .unwrap();
        assert_eq!(timestamp(&at), "Mar  7 09:05:03");
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 23, 59, 59)
            .unwrap();
        let stamp = timestamp(&at);
        assert_eq!(stamp, "Nov 22 23:59:59");
        let line = format_message(16, 6, &stamp, "db1", 4242, " agent: started\n");
        assert_eq!(
            line,
            "<134>Nov 22 23:59:59 db1 muster[4242]: agent: started"
        );
        // No hostname, or one that would break the layout, becomes localhost.
        let line = format_message(16, 6, &stamp, "", 1, "m");
        assert_eq!(line, "<134>Nov 22 23:59:59 localhost muster[1]: m");
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let line = format_message(16, 6, "Jan  1 00:00:00", "h", 1, &long);
        let body = line.split_once("]: ").unwrap().1;
        assert!(body.len() <= MAX_MESSAGE && body.len() > MAX_MESSAGE - 2);
        assert!(body.chars().all(|c| c == 'é'));
    }

    fn recv(server: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn writer_sends_one_datagram_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let writer = SyslogWriter::new(&path, 17, "node-a");
        let meta_level = Level::WARN;
        {
            let mut line = SyslogLine {
                writer: writer.clone(),
                severity: severity(&meta_level),
                buf: Vec::new(),
            };
            line.write_all(b"WARN muster: first part ").unwrap();
            line.write_all(b"and the rest\n").unwrap();
        }
        let got = recv(&server);
        let pid = std::process::id();
        assert!(got.starts_with("<140>"), "{got}"); // LOCAL1 (17) * 8 + warning (4)
        assert!(
            got.ends_with(&format!(
                " node-a muster[{pid}]: WARN muster: first part and the rest"
            )),
            "{got}"
        );
        // "<140>" + "Mmm dd hh:mm:ss" + " "
        assert_eq!(&got[5 + 15..5 + 16], " ", "{got}");
        assert!(writer.is_connected());
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn tracing_events_reach_the_socket_with_their_level() {
        use tracing_subscriber::layer::SubscriberExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let writer = SyslogWriter::new(&path, 16, "h");
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .without_time(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(key = 7, "something broke");
            tracing::info!("all good");
        });
        let first = recv(&server);
        assert!(first.starts_with("<131>"), "{first}");
        assert!(first.contains("something broke key=7"), "{first}");
        let second = recv(&server);
        assert!(second.starts_with("<134>"), "{second}");
        assert!(second.contains("all good"), "{second}");
    }

    #[test]
    fn missing_socket_drops_and_reconnects_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.sock");
        let writer = SyslogWriter::new(&path, 16, "h");
        writer.send(6, "lost");
        assert!(!writer.is_connected());
        assert_eq!(writer.dropped(), 1);
        // The daemon appears; the next attempt is due once the retry time has passed.
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        writer.inner.conn.lock().retry_at = Some(Instant::now());
        writer.send(6, "found");
        assert!(writer.is_connected());
        assert!(recv(&server).ends_with("]: found"));
        // The daemon goes away: the send fails, the socket is dropped, nothing panics.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        writer.send(6, "gone");
        assert!(!writer.is_connected());
        assert_eq!(writer.dropped(), 2);
    }

    #[test]
    fn socket_path_honours_the_environment() {
        assert_eq!(socket_path_from(None), PathBuf::from("/dev/log"));
        assert_eq!(socket_path_from(Some("".into())), PathBuf::from("/dev/log"));
        assert_eq!(
            socket_path_from(Some("/tmp/x.sock".into())),
            PathBuf::from("/tmp/x.sock")
        );
    }
}
