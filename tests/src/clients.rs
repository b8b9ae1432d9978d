//! Real clients and servers, not the project's own: curl, Python's socket and http.client,
//! Perl's IO::Socket, nginx. They behave the way real software does (curl connects
//! non-blocking and gives up at its first wake-up with an error; Python's
//! `create_connection` blocks; Perl's IO::Socket::IP tries each address in turn), which
//! `ct-peer` would only imitate.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// A client that ran to completion: its pid (the one that connected) and what it
/// printed on stdout after its pid line.
#[derive(Debug)]
pub struct Run {
    pub pid: u32,
    pub stdout: String,
    pub exit_code: Option<i32>,
}

impl Netns {
    /// Runs `argv` in this namespace and waits for it. It runs as `sh -c 'echo $$; exec
    /// ARGV'` (`ip netns exec` execs in place), so the pid it prints first is the pid of
    /// the client itself.
    pub fn run_client(&self, argv: &[&str]) -> Run {
        let out = self
            .client_command(argv)
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (pid, rest) = text.split_once('\n').unwrap_or((&text, ""));
        Run {
            pid: pid
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("no pid from {argv:?}: {text}")),
            stdout: rest.to_owned(),
            exit_code: out.status.code(),
        }
    }

    /// Starts `argv` in this namespace, as [`Netns::run_client`] does, without waiting.
    pub fn start_client(&self, argv: &[&str]) -> Child {
        self.client_command(argv)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"))
    }

    fn client_command(&self, argv: &[&str]) -> Command {
        let mut all = vec!["sh", "-c", "echo $$; exec \"$@\"", "client"];
        all.extend_from_slice(argv);
        let mut cmd = self.command(&all);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd
    }
}

/// `curl` fetching `url`, failing fast (no retries, a short connect timeout).
pub fn curl(url: &str, connect_timeout_s: u32) -> Vec<String> {
    [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--connect-timeout",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([connect_timeout_s.to_string(), url.to_owned()])
    .collect()
}

/// `python3 -c CODE`.
pub fn python(code: &str) -> Vec<String> {
    vec!["python3".into(), "-c".into(), code.into()]
}

/// `perl -e CODE`.
pub fn perl(code: &str) -> Vec<String> {
    vec!["perl".into(), "-e".into(), code.into()]
}

/// A blocking `socket.create_connection` in Python, printing the errno name it failed
/// with (or `ok`).
pub fn python_connect(host: &str, port: u16, timeout_s: f64) -> Vec<String> {
    python(&format!(
        "import socket, errno\n\
         try:\n    socket.create_connection(({host:?}, {port}), timeout={timeout_s}).close(); print('ok')\n\
         except OSError as e:\n    print(errno.errorcode.get(e.errno, 'timeout'))\n"
    ))
}

/// A connect by Perl's IO::Socket::IP, printing `ok` or the error. With a timeout it
/// connects non-blocking and waits for the socket (giving up at an error's wake-up);
/// without one it blocks until the kernel gives up.
pub fn perl_connect(host: &str, port: u16, timeout_s: Option<u32>) -> Vec<String> {
    let timeout = timeout_s.map_or(String::new(), |t| format!(", Timeout => {t}"));
    perl(&format!(
        "use IO::Socket::IP; my $s = IO::Socket::IP->new(PeerHost => '{host}', PeerPort => {port}\
         {timeout}); print $s ? \"ok\\n\" : \"$!\\n\";"
    ))
}

/// Borrows a `Vec<String>` as the `&[&str]` the runners take.
pub fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A real nginx in a namespace, configured by the test, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `ns` with `server` as the body of its `http {}` block and waits
    /// until it listens on `port`.
    pub fn start(ns: &Netns, server: &str, port: u16) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "conntrace-nginx-{}-{}",
            std::process::id(),
            ns.name
        ));
        std::fs::create_dir_all(&dir).expect("nginx scratch directory");
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {dir};\n proxy_temp_path {dir};\n\
                 {server}\n}}\n",
                dir = dir.display()
            ),
        )
        .expect("write nginx.conf");
        let child = ns
            .command(&[
                "nginx",
                "-c",
                conf.to_str().expect("UTF-8 path"),
                "-e",
                "stderr",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (install nginx-light: cargo xtask setup)");
        let nginx = Nginx { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.listens_on(port) {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}

impl Nginx {
    /// Stops nginx's processes (SIGSTOP, master and workers): it still listens, but
    /// nothing accepts.
    pub fn stop_processes(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Lets them run again.
    pub fn continue_processes(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, signal: i32) {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        for pid in pids {
            // SAFETY: kill() with a pid and a signal.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The fields after the parenthesised name: state, then ppid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.continue_processes();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Netns {
    /// Whether something listens on TCP `port` in this namespace.
    pub fn listens_on(&self, port: u16) -> bool {
        let out = self
            .command(&["ss", "-Htln", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2)");
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}
