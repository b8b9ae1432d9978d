//! `web`: a web server that connects and serves normally, with real software: Debian's
//! nginx serving a small static file on this namespace's loopback, and Apache's `ab`
//! requesting it without keep-alive, so that every request is a connect (SYN, accept, a
//! few hundred bytes each way, FIN). Nothing fails: this is what a tracer costs a healthy
//! service.
//!
//! nginx runs without a master process (`master_process off`), one process per CPU pair
//! sharing the port (`reuseport`), and `ab` (one thread) as many times beside it; so each
//! process we start is the one that serves, and dies with us (`PR_SET_PDEATHSIG`) even if
//! we are killed: nothing outlives the namespace.
use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Counts,
    os::{PrivateDir, proc_cpu_seconds},
};

const PORT: u16 = 8080;
/// The size of nginx's own welcome page: a small static response.
const PAGE_BYTES: usize = 612;
const LISTEN_LIMIT: Duration = Duration::from_secs(10);

/// nginx processes, listening and waiting for `serve`.
pub struct Server {
    nginx: Vec<Child>,
    /// Its configuration, page and logs; removed after nginx is gone (drop order).
    _dir: PrivateDir,
}

impl Server {
    /// Starts one nginx per two load threads (at least one) and waits until all listen.
    pub fn start(threads: usize) -> anyhow::Result<Server> {
        let dir = PrivateDir::new("loadgen-web").context("create nginx's directory")?;
        let root = dir.path();
        std::fs::write(root.join("index.html"), "x".repeat(PAGE_BYTES))?;
        let conf = root.join("nginx.conf");
        std::fs::write(&conf, config(&root.display().to_string()))?;
        let mut server = Server {
            nginx: Vec::new(),
            _dir: dir,
        };
        for _ in 0..(threads / 2).max(1) {
            let child = dies_with_us(
                Command::new("nginx")
                    .arg("-c")
                    .arg(&conf)
                    .args(["-e", "stderr"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null()),
            )
            .spawn()
            .context("start nginx (install nginx-light: cargo xtask setup)")?;
            server.nginx.push(child);
        }
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LISTEN_LIMIT;
        while listeners(PORT) < self.nginx.len() {
            for n in &mut self.nginx {
                if let Some(status) = n.try_wait()? {
                    bail!("nginx exited before listening ({status}); see its messages above");
                }
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on port {PORT} within {LISTEN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Runs one `ab` per nginx for `duration` (whole seconds: `ab -t` takes no fraction)
    /// with `inflight` requests in flight over all of them; returns their counts and the
    /// CPU that the server and the clients used meanwhile.
    pub fn serve(self, inflight: usize, duration: f64) -> anyhow::Result<(Counts, f64)> {
        let clients = self.nginx.len();
        let seconds = (duration.ceil() as u64).max(1).to_string();
        let concurrency = (inflight / clients).max(1).to_string();
        let url = format!("http://127.0.0.1:{PORT}/index.html");
        let server_cpu = || -> f64 { self.nginx.iter().map(|n| proc_cpu_seconds(n.id())).sum() };
        let server_before = server_cpu();
        let clients_before = children_cpu_seconds();
        let ab: Vec<Child> = (0..clients)
            .map(|_| {
                // -t before -n: -t implies `-n 50000`, a later -n lifts it. -r: a failed
                // request is counted, not the end of the run.
                dies_with_us(Command::new("ab").args(["-q", "-r", "-s", "10", "-c"]))
                    .arg(&concurrency)
                    .args(["-t", &seconds, "-n", "100000000"])
                    .arg(&url)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("start ab (install apache2-utils: cargo xtask setup)")
            })
            .collect::<anyhow::Result<_>>()?;
        let mut total = Counts::default();
        for client in ab {
            let out = client.wait_with_output().context("wait for ab")?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!("ab failed ({}):\n{text}", out.status);
            }
            total.add(&parse_ab(&text).with_context(|| format!("ab's report:\n{text}"))?);
        }
        // Only ab has been waited for so far: the children's usage is theirs alone.
        let cpu = (children_cpu_seconds() - clients_before) + (server_cpu() - server_before);
        Ok((total, cpu))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for n in &mut self.nginx {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn config(dir: &str) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n keepalive_timeout 0;\n"
    );
    // nginx checks its temporary directories at start: keep them in ours.
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(c, " {kind}_temp_path {dir};");
    }
    let _ = write!(
        c,
        " server {{\n  listen 127.0.0.1:{PORT} reuseport backlog=4096;\n  root {dir};\n }}\n}}\n"
    );
    c
}

/// The child gets SIGKILL when we die, however we die.
fn dies_with_us(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Sockets listening on 127.0.0.1:`port` in this namespace (/proc/self/net/tcp is the
/// reader's namespace's table).
fn listeners(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/self/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let mut fields = l.split_whitespace().skip(1);
            fields.next() == Some(local.as_str()) && fields.nth(1) == Some("0A")
        })
        .count()
}

/// CPU seconds of the children waited for so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// ab's counts: every request completed is an attempt; failed ones (connect, read,
/// length) and non-2xx answers are not ok.
fn parse_ab(text: &str) -> anyhow::Result<Counts> {
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    let complete = field("Complete requests:").context("no \"Complete requests\"")? as u64;
    let failed = field("Failed requests:").unwrap_or(0.0) as u64;
    let non_2xx = field("Non-2xx responses:").unwrap_or(0.0) as u64;
    let bad = (failed + non_2xx).min(complete);
    Ok(Counts {
        attempts: complete,
        ok: complete - bad,
        other: bad,
        elapsed_s: Some(field("Time taken for tests:").context("no \"Time taken\"")?),
        ..Counts::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_abs_report() {
        let report = "Concurrency Level:      16\nTime taken for tests:   2.000 seconds\n\
                      Complete requests:      48595\nFailed requests:        3\n\
                      Non-2xx responses:      2\nRequests per second:    24297.04 [#/sec]\n";
        let c = parse_ab(report).unwrap();
        assert_eq!((c.attempts, c.ok, c.other), (48_595, 48_590, 5));
        assert_eq!(c.elapsed_s, Some(2.0));
        assert!(parse_ab("apr_socket_connect(): Connection refused (111)").is_err());
    }
}
