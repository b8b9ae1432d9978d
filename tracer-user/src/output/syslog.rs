//! `--syslog udp:HOST:PORT` or `tcp:HOST:PORT`: each record as one RFC 5424 message, its
//! JSON line as the MSG, for a syslog daemon (rsyslog, syslog-ng) to route. Over UDP, one
//! datagram per record; over TCP, octet-counted framing (RFC 6587), which a record's own
//! characters cannot break. The header is read off the record itself: its `@timestamp`
//! (to microseconds, as RFC 5424 allows), its `event.action` as MSGID, and a severity from
//! its kind (warning for a verdict, notice for a failure, info otherwise).
use std::{
    io::{self, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
};

use super::queue::{Chunk, Queue};

/// The facility of every message: daemon.
const FACILITY_DAEMON: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;
/// How far into a record its kind, action and outcome are looked for.
const HEAD: usize = 240;

/// `--syslog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOptions {
    pub tcp: bool,
    pub address: SocketAddr,
}

impl SyslogOptions {
    /// `udp:127.0.0.1:514`, `tcp:[::1]:601`.
    pub fn parse(text: &str) -> Result<SyslogOptions, String> {
        let bad =
            || format!("--syslog {text}: give udp:HOST:PORT or tcp:HOST:PORT (udp:127.0.0.1:514)");
        let (transport, addr) = text.split_once(':').ok_or_else(bad)?;
        let tcp = match transport {
            "udp" => false,
            "tcp" => true,
            _ => return Err(bad()),
        };
        let address = addr.parse().map_err(|_| bad())?;
        Ok(SyslogOptions { tcp, address })
    }
}

enum Socket {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The connection to the syslog daemon.
pub struct Sender {
    socket: Socket,
    host: String,
    pid: u32,
    /// One message at a time, reused.
    message: Vec<u8>,
}

impl Sender {
    pub fn connect(options: &SyslogOptions) -> io::Result<Sender> {
        let socket = if options.tcp {
            Socket::Tcp(TcpStream::connect(options.address)?)
        } else {
            let local: SocketAddr = if options.address.is_ipv4() {
                "0.0.0.0:0".parse().map_err(io::Error::other)?
            } else {
                "[::]:0".parse().map_err(io::Error::other)?
            };
            let s = UdpSocket::bind(local)?;
            s.connect(options.address)?;
            Socket::Udp(s)
        };
        Ok(Sender {
            socket,
            host: printable_field(
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim(),
            ),
            pid: std::process::id(),
            message: Vec::with_capacity(4096),
        })
    }

    /// Sends every record of a chunk, one message each, reporting progress per record.
    pub fn send(&mut self, chunk: &Chunk, queue: &Queue) -> io::Result<()> {
        let mut start = 0;
        for end in chunk.record_ends() {
            let record = chunk.bytes[start..end]
                .strip_suffix(b"\n")
                .unwrap_or(&chunk.bytes[start..end]);
            self.message.clear();
            frame(&mut self.message, record, &self.host, self.pid);
            match &mut self.socket {
                Socket::Udp(s) => {
                    s.send(&self.message)?;
                }
                Socket::Tcp(s) => {
                    let len = self.message.len().to_string();
                    s.write_all(len.as_bytes())?;
                    s.write_all(b" ")?;
                    s.write_all(&self.message)?;
                }
            }
            start = end;
            queue.progress(chunk, end);
        }
        Ok(())
    }
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME conntrace PROCID MSGID - MSG`.
pub fn frame(out: &mut Vec<u8>, record: &[u8], host: &str, pid: u32) {
    let head = &record[..record.len().min(HEAD)];
    let action = value_of(head, b"\"action\":\"").unwrap_or(b"-");
    let severity = if contains(head, b"\"kind\":\"alert\"") {
        WARNING
    } else if contains(head, b"\"outcome\":\"failure\"") {
        NOTICE
    } else {
        INFO
    };
    let _ = write!(out, "<{}>1 ", FACILITY_DAEMON * 8 + severity);
    match value_of(head, b"\"@timestamp\":\"") {
        // 2026-11-28T18:26:39.280679688Z: RFC 5424 keeps six digits of the fraction.
        Some(ts) if ts.len() == 30 => {
            out.extend_from_slice(&ts[..26]);
            out.push(b'Z');
        }
        _ => out.push(b'-'),
    }
    let _ = write!(out, " {host} conntrace {pid} ");
    out.extend_from_slice(if action.is_empty() { b"-" } else { action });
    out.extend_from_slice(b" - ");
    out.extend_from_slice(record);
}

/// The string value after `key` (up to the next quote).
fn value_of<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let len = text[at..].iter().position(|&b| b == b'"')?;
    Some(&text[at..at + len])
}

fn contains(text: &[u8], what: &[u8]) -> bool {
    text.windows(what.len()).any(|w| w == what)
}

/// A header field: printable ASCII without spaces, at most 255 bytes, `-` when empty.
fn printable_field(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_transport() {
        let o = SyslogOptions::parse("tcp:127.0.0.1:601").unwrap();
        assert!(o.tcp && o.address.port() == 601);
        assert!(!SyslogOptions::parse("udp:[::1]:514").unwrap().tcp);
        assert!(SyslogOptions::parse("127.0.0.1:514").is_err());
        assert!(SyslogOptions::parse("tcp:localhost:514").is_err());
    }

    #[test]
    fn a_record_becomes_an_rfc5424_message() {
        let record = br#"{"@timestamp":"2026-11-28T18:26:39.280679688Z","event":{"kind":"event","category":["network"],"type":["connection"],"action":"connect","outcome":"failure","reason":"refused"}}"#;
        let mut m = Vec::new();
        frame(&mut m, record, "node-1", 42);
        let text = String::from_utf8(m).unwrap();
        assert_eq!(
            text,
            format!(
                "<29>1 2026-11-28T18:26:39.280679Z node-1 conntrace 42 connect - {}",
                String::from_utf8_lossy(record)
            )
        );
        let mut m = Vec::new();
        frame(
            &mut m,
            br#"{"@timestamp":"x","event":{"kind":"alert","action":"verdict"}}"#,
            "-",
            1,
        );
        assert!(m.starts_with(b"<28>1 - - conntrace 1 verdict - {"));
        assert_eq!(printable_field("a b\u{1}c"), "abc");
    }
}
