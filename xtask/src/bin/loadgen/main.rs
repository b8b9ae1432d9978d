//! `loadgen`: the benchmark's load generator. N threads doing `connect()` in a loop, in a
//! network namespace of its own (so that the traffic never leaves it and the tracer can be
//! filtered to it), against:
//!
//! - `refused`: a closed port on loopback (SYN, RST: ECONNREFUSED);
//! - `success`: a listener of its own; each thread connects, closes with a RST (so that no
//!   TIME_WAIT piles up), then accepts and closes what the listener has queued (so that the
//!   accept queue never overflows and no SYN is dropped);
//! - `timeout`: a listener whose accept queue is full, so the kernel drops every SYN;
//!   non-blocking connects, `tcp_syn_retries` = 1: ETIMEDOUT after about 3 s;
//! - `distinct`: a closed port on many distinct loopback addresses (127.1.0.0 upwards, all
//!   local in any namespace), for the cardinality run;
//! - `web`: real software, no loop of ours: nginx serving a small static file on loopback,
//!   Apache's `ab` requesting it without keep-alive (one connect per request; see `web`);
//! - loads that never connect, for what a tracer costs the rest of the host (see `quiet`):
//!   `syscalls` (a getppid() loop), `udp-closed` (UDP to a closed port: every packet is
//!   dropped, reason NO_SOCKET), `udp-dropped` (UDP dropped by an nftables rule in the
//!   output hook: NETFILTER_DROP, with the sending socket attached), `udp-unroutable` (UDP
//!   to an address without a route: every send is a failed route lookup).
//!
//! Protocol with the harness: after setting up it prints one JSON line
//! `{"ready": true, "pid": P, "netns": INODE, "own_netns": BOOL}`; with `--wait-go` it then
//! waits for a line on stdin (EOF: it exits without any traffic); it runs the load and
//! prints one JSON line with its own counts ("attempts" are connects, requests, system
//! calls or packets, by mode). Every loop is bounded in time and count, and every process
//! it starts dies with it.
#[path = "../../os.rs"]
mod os;
mod quiet;
mod web;
use std::{
    io::{BufRead as _, ErrorKind},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    os::unix::fs::MetadataExt as _,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Refused,
    Success,
    Timeout,
    Distinct,
    Web,
    Syscalls,
    UdpClosed,
    UdpDropped,
    UdpUnroutable,
}

impl Mode {
    /// Modes that change their network namespace (firewall rules, listeners on fixed
    /// ports) and so must not run in the host's.
    fn needs_own_netns(self) -> bool {
        matches!(self, Mode::Web | Mode::UdpDropped | Mode::UdpUnroutable)
    }
}

/// connect() storms for conntrace's benchmark (see `cargo xtask bench`).
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// Connecting threads [default: the number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds of load (timeouts started before the end are still waited for).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Stop after this many attempts in all (0: only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    max_attempts: u64,
    /// Attempts per second over all threads (0: as fast as they go). Not for `timeout`.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Destination port.
    #[arg(long, default_value_t = 9)]
    port: u16,
    /// `distinct`: how many destination addresses to cycle through.
    #[arg(long, default_value_t = 100_000)]
    dests: u32,
    /// `timeout`: connects in flight at once, over all threads [default: what the file
    /// descriptor limit allows, at most 16384]. `web`: requests in flight, over all
    /// clients [default: 32].
    #[arg(long)]
    inflight: Option<usize>,
    /// Stay in the current network namespace (loopback only) instead of creating one.
    #[arg(long)]
    no_netns: bool,
    /// Wait for a line on stdin before starting the load.
    #[arg(long)]
    wait_go: bool,
}

/// What one thread saw.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    attempts: u64,
    ok: u64,
    refused: u64,
    timed_out: u64,
    other: u64,
    /// `timeout`: connects still unresolved at the hard bound, closed by us (the tracer
    /// reports them as abandoned).
    abandoned: u64,
    /// Wall time of the load where a client measured it better than we can (`ab`).
    elapsed_s: Option<f64>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.attempts += o.attempts;
        self.ok += o.ok;
        self.refused += o.refused;
        self.timed_out += o.timed_out;
        self.other += o.other;
        self.abandoned += o.abandoned;
        self.elapsed_s = match (self.elapsed_s, o.elapsed_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// `timeout`: how long after the last connect we wait for the kernel to give up on it
/// (tcp_syn_retries = 1 gives up after 1 s + 2 s; the rest is margin).
const TIMEOUT_DRAIN: Duration = Duration::from_secs(8);
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// `distinct`: the first destination address.
const DISTINCT_BASE: u32 = u32::from_be_bytes([127, 1, 0, 0]);

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration < 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, 1024);
    let own_netns = !args.no_netns && enter_own_netns()?;
    if args.mode.needs_own_netns() && !own_netns {
        bail!("{:?} needs a network namespace of its own", args.mode);
    }
    let nofile = raise_nofile();
    let netns = std::fs::metadata("/proc/self/ns/net")
        .context("stat /proc/self/ns/net")?
        .ino();
    let prepared = prepare(args, threads)?;
    println!(
        "{{\"ready\": true, \"pid\": {}, \"netns\": {netns}, \"own_netns\": {own_netns}}}",
        std::process::id()
    );
    if args.wait_go {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            bail!("stdin closed before the go");
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let per_thread_max = if args.max_attempts == 0 {
        u64::MAX
    } else {
        args.max_attempts.div_ceil(threads as u64)
    };
    let inflight = args
        .inflight
        .unwrap_or(16_384)
        .min(nofile.saturating_sub(256))
        .max(threads);
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let (total, cpu) = match prepared {
        Prepared::Connects(listener) => {
            let total = connects(args, threads, deadline, per_thread_max, inflight, listener)?;
            // The load's own CPU, the kernel's work in its connect() calls included (and
            // with it whatever BPF programs run there).
            (total, own_cpu_seconds() - cpu_before)
        }
        Prepared::Quiet(target) => {
            let mode = args.mode;
            let total = on_threads(threads, move |_| {
                quiet::run(mode, target, deadline, per_thread_max)
            })?;
            (total, own_cpu_seconds() - cpu_before)
        }
        // The server's and the clients' CPU: ours is only waiting.
        Prepared::Web(server) => server.serve(args.inflight.unwrap_or(32), args.duration)?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"mode\": \"{:?}\", \"threads\": {threads}, \"attempts\": {}, \"ok\": {}, \
         \"refused\": {}, \"timed_out\": {}, \"other\": {}, \"abandoned\": {}, \
         \"elapsed_s\": {:.6}, \"cpu_s\": {cpu:.6}, \"inflight\": {}, \
         \"distinct_dests\": {}}}",
        args.mode,
        total.attempts,
        total.ok,
        total.refused,
        total.timed_out,
        total.other,
        total.abandoned,
        total.elapsed_s.unwrap_or(elapsed),
        if args.mode == Mode::Timeout {
            inflight
        } else {
            0
        },
        if args.mode == Mode::Distinct {
            total.attempts.min(u64::from(args.dests))
        } else {
            1
        },
    );
    Ok(())
}

/// What a mode sets up before the go.
enum Prepared {
    /// The connect storms, with the listener `success` needs.
    Connects(Option<Arc<TcpListener>>),
    /// Where the loads that never connect send their packets.
    Quiet(SocketAddr),
    Web(web::Server),
}

fn prepare(args: &Args, threads: usize) -> anyhow::Result<Prepared> {
    let target = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, args.port));
    Ok(match args.mode {
        Mode::Success => Prepared::Connects(Some(Arc::new(start_listener(target)?))),
        Mode::Timeout => {
            start_full_listener(target)?;
            Prepared::Connects(None)
        }
        Mode::Refused | Mode::Distinct => {
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                bail!("something listens on {target}: pick another --port");
            }
            Prepared::Connects(None)
        }
        Mode::Web => Prepared::Web(web::Server::start(threads)?),
        Mode::Syscalls | Mode::UdpClosed | Mode::UdpDropped | Mode::UdpUnroutable => {
            Prepared::Quiet(quiet::prepare(args.mode, args.port)?)
        }
    })
}

/// The connect storms, one loop per thread.
fn connects(
    args: &Args,
    threads: usize,
    deadline: Instant,
    per_thread_max: u64,
    inflight: usize,
    listener: Option<Arc<TcpListener>>,
) -> anyhow::Result<Counts> {
    let pace = Pace {
        started: Instant::now(),
        per_thread_rate: args.rate as f64 / threads as f64,
    };
    let target = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, args.port));
    let (mode, dests, port) = (args.mode, args.dests.max(1), args.port);
    on_threads(threads, move |i| match mode {
        Mode::Distinct => storm(deadline, per_thread_max, pace, None, |n| {
            let index = (n * threads as u64 + i as u64) % u64::from(dests);
            let ip = Ipv4Addr::from(DISTINCT_BASE + index as u32);
            SocketAddr::V4(SocketAddrV4::new(ip, port))
        }),
        Mode::Timeout => timeouts(target, deadline, per_thread_max, inflight / threads),
        _ => storm(deadline, per_thread_max, pace, listener.as_deref(), |_| {
            target
        }),
    })
}

/// Runs `work(i)` on threads 0..n and adds up their counts.
fn on_threads(
    n: usize,
    work: impl Fn(usize) -> anyhow::Result<Counts> + Send + Sync + 'static,
) -> anyhow::Result<Counts> {
    let work = Arc::new(work);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let work = Arc::clone(&work);
            thread::spawn(move || work(i))
        })
        .collect();
    let mut total = Counts::default();
    for h in handles {
        let counts = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.add(&counts);
    }
    Ok(total)
}

/// Blocking connects one after another until the deadline or `max` attempts. With a
/// listener, each successful connect is followed by one accept on it.
fn storm(
    deadline: Instant,
    max: u64,
    pace: Pace,
    listener: Option<&TcpListener>,
    dest: impl Fn(u64) -> SocketAddr,
) -> anyhow::Result<Counts> {
    let mut c = Counts::default();
    while c.attempts < max && Instant::now() < deadline {
        pace.wait(c.attempts);
        let to = dest(c.attempts);
        c.attempts += 1;
        match TcpStream::connect(to) {
            Ok(stream) => {
                c.ok += 1;
                close_with_reset(&stream);
                drop(stream);
                // Take what is queued (this connection or other threads'), without
                // waiting: the listener is non-blocking.
                if let Some(l) = listener {
                    while l.accept().is_ok() {}
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => c.refused += 1,
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                // No free local port: not an attempt that reached the wire.
                c.other += 1;
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => c.other += 1,
        }
    }
    Ok(c)
}

/// A fixed rate per thread, or none.
#[derive(Clone, Copy)]
struct Pace {
    started: Instant,
    per_thread_rate: f64,
}

impl Pace {
    /// Sleeps while this thread is ahead of its schedule for attempt number `n`.
    fn wait(&self, n: u64) {
        if self.per_thread_rate <= 0.0 {
            return;
        }
        let due = self.started + Duration::from_secs_f64(n as f64 / self.per_thread_rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    }
}

/// `SO_LINGER` 0: close() sends a RST and leaves no TIME_WAIT behind.
fn close_with_reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a pointer to a local of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Keeps `cap` non-blocking connects in flight towards a port whose SYNs are dropped, and
/// counts how each one ends.
fn timeouts(target: SocketAddr, deadline: Instant, max: u64, cap: usize) -> anyhow::Result<Counts> {
    let mut c = Counts::default();
    let mut pending: Vec<Socket> = Vec::with_capacity(cap);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(cap);
    let hard_stop = deadline + TIMEOUT_DRAIN;
    let to = SockAddr::from(target);
    loop {
        let now = Instant::now();
        if now >= hard_stop {
            c.abandoned += pending.len() as u64;
            break;
        }
        let starting = now < deadline && c.attempts < max;
        if !starting && pending.is_empty() {
            break;
        }
        while starting && pending.len() < cap && c.attempts < max {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            set_syn_count(&s, 1);
            c.attempts += 1;
            match s.connect(&to) {
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => pending.push(s),
                Ok(()) => c.ok += 1,
                Err(_) => c.other += 1,
            }
        }
        fds.clear();
        fds.extend(pending.iter().map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if n <= 0 {
            continue;
        }
        // Remove finished sockets back to front so that indices stay valid.
        for i in (0..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let s = pending.swap_remove(i);
            match s.take_error() {
                Ok(Some(e)) if e.raw_os_error() == Some(libc::ETIMEDOUT) => c.timed_out += 1,
                Ok(Some(e)) if e.kind() == ErrorKind::ConnectionRefused => c.refused += 1,
                Ok(None) => c.ok += 1,
                _ => c.other += 1,
            }
        }
    }
    Ok(c)
}

/// `TCP_SYNCNT`: this socket's own SYN retries (the namespace's sysctl says the same; this
/// also holds where no namespace of our own could be made).
fn set_syn_count(s: &Socket, n: libc::c_int) {
    // SAFETY: a valid socket and a pointer to a local of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&raw const n).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The `success` mode's listener, with the largest backlog the kernel allows.
fn start_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener
        .bind(&SockAddr::from(addr))
        .with_context(|| format!("bind {addr}"))?;
    listener.listen(65_535)?;
    listener.set_nonblocking(true)?;
    Ok(listener.into())
}

/// A listener with a backlog of 0 and one connection already queued, never accepted: the
/// kernel drops every further SYN to it (accept queue full), so connects time out.
fn start_full_listener(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener
        .bind(&SockAddr::from(addr))
        .with_context(|| format!("bind {addr}"))?;
    listener.listen(0)?;
    let filler = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .context("queue the connection that fills the accept queue")?;
    // A second connect must now go unanswered; check it, so that a kernel that behaves
    // otherwise is noticed here rather than in the figures.
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if probe
        .connect_timeout(&SockAddr::from(addr), Duration::from_millis(300))
        .is_ok()
    {
        bail!("SYNs to a full accept queue were answered: cannot stage timeouts here");
    }
    drop(probe);
    // The listener and the queued connection must outlive the run: leak them on purpose
    // (the process exits at the end of the run).
    std::mem::forget(listener);
    std::mem::forget(filler);
    Ok(())
}

/// Creates a network namespace for this process and brings its loopback up; sets
/// `tcp_syn_retries` = 1 and a wide local port range inside it. Returns false (and stays
/// where it is) when namespaces cannot be created here.
fn enter_own_netns() -> anyhow::Result<bool> {
    // SAFETY: unshare with a valid flag; only this (still single-threaded) process moves.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "loadgen: cannot create a network namespace ({}); using this one's loopback",
            std::io::Error::last_os_error()
        );
        return Ok(false);
    }
    loopback_up()?;
    // /proc/sys/net is the namespace of whoever opens it: these change only ours.
    std::fs::write("/proc/sys/net/ipv4/tcp_syn_retries", "1").context("set tcp_syn_retries")?;
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
        .context("set ip_local_port_range")?;
    Ok(true)
}

fn loopback_up() -> anyhow::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: an all-zero ifreq is valid; the name fits with its NUL.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq; ifru_flags is the member both use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(std::io::Error::last_os_error()).context("bring lo up");
        }
    }
    Ok(())
}

/// User + system CPU seconds of this process, all its threads.
fn own_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Raises the soft file-descriptor limit to the hard one; returns the limit in force.
fn raise_nofile() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}
