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
