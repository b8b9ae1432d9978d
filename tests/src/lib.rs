//! The harness for conntrace's privileged tests: network namespaces that clean up after
//! themselves, nftables rules inside them, the `ct-peer` client/server, and a running
//! `conntrace trace` whose JSON records the tests assert on.
//!
//! Every test names its namespaces uniquely and filters conntrace to its own client
//! namespace, so tests run in parallel and on a busy host. A test that cannot run (not
//! root, a tool missing) fails: it never passes quietly.
pub mod clients;
pub mod container;
pub mod deploy;
pub mod diagnose;
pub mod http;
pub mod loadgen;
pub mod netns;
pub mod run;
pub mod tracer;

/// Fails the test unless we are root: these tests load eBPF programs and create
/// namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged tests must run as root (use `cargo xtask test`)"
    );
}

/// A binary cargo built: `$env_var` if set, else `name` beside the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), the way assert_cmd finds
/// binaries without naming the target directory.
pub fn built_binary(name: &str, env_var: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} not found: build it (cargo build --workspace) or set {env_var}",
        bin.display()
    );
    bin
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ct-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        // Owner only: logrotate refuses directories others may write to.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod the temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed (and waited for) when the test ends, however it ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
