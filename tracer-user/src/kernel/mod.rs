//! Facts about the running kernel that decide how conntrace loads: where tracefs is, the
//! layout of the tracepoints we read, offsets into kernel structures from BTF, and whether
//! we are privileged enough.
pub mod btf;
pub mod privileges;
pub mod tracefs;

/// The kernel release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}
