//! `/metrics` over HTTP, from a thread of its own: a scraper that stalls or floods costs
//! that thread, never the event loop. One request per connection, GET only, a short read
//! timeout; no web framework, as there is one page to serve.
use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use prometheus_client::{encoding::prometheus_text, registry::Registry};

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request line and headers longer than this are refused.
const MAX_REQUEST: usize = 8 * 1024;

/// `--metrics ADDR`: `9464` (loopback), `:9464` (loopback), `0.0.0.0:9464`, `[::1]:9464`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    t.parse().map_err(|_| {
        format!(
            "--metrics {text}: give a port (served on loopback) or an address and port \
             (0.0.0.0:9464, [::1]:9464)"
        )
    })
}

/// Binds now (so that a taken port fails at start-up), serves from a thread.
pub fn serve(
    address: SocketAddr,
    registry: Arc<Registry>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    let thread = std::thread::Builder::new()
        .name("conntrace-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &registry) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("metrics: accept failed: {e}"),
                }
            }
        })?;
    Ok((bound, thread))
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let request = read_head(&mut stream)?;
    let (status, content_type, body) = respond(&request, registry);
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    if !request.starts_with("HEAD ") {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// The request line and headers, up to the blank line.
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return Err(io::Error::other("request too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status line, content type and body for a request.
pub fn respond(request: &str, registry: &Registry) -> (&'static str, &'static str, String) {
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET /metrics\n".into());
    }
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_text::encode(&mut body, registry) {
                Ok(()) => ("200 OK", prometheus_text::CONTENT_TYPE, body),
                Err(_) => (
                    "500 Internal Server Error",
                    TEXT,
                    "encoding failed\n".into(),
                ),
            }
        }
        "/" => ("200 OK", TEXT, "conntrace: metrics at /metrics\n".into()),
        _ => ("404 Not Found", TEXT, "not found: try /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_means_loopback() {
        assert_eq!(parse_address("9464"), Ok("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            parse_address(":9464"),
            Ok("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse_address("0.0.0.0:9464"),
            Ok("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(
            parse_address("localhost")
                .unwrap_err()
                .contains("--metrics")
        );
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let registry = Arc::new(Registry::with_prefix("t"));
        let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), registry).unwrap();
        let get = |request: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }
}
