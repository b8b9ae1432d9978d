//! Are we allowed to load and attach eBPF tracing programs?
use crate::exit::StartError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities before anything is loaded, so that the user gets one
/// clear line instead of a verifier or EPERM dump.
pub fn check() -> Result<(), StartError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = effective_caps(&status) else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    if has_needed(caps) {
        Ok(())
    } else {
        Err(StartError::NoPrivilege(
            "conntrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load its eBPF programs: \
             run it as root, or grant them (setcap cap_bpf,cap_perfmon,cap_sys_resource+ep)"
                .into(),
        ))
    }
}

fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn has_needed(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps to it. Newer
/// kernels charge the memory cgroup instead, so failing here (no CAP_SYS_RESOURCE) is
/// harmless and only logged.
pub fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on Linux ≥ 5.11",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_caps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn needs_bpf_and_perfmon_or_sys_admin() {
        assert!(has_needed(1 << CAP_SYS_ADMIN));
        assert!(has_needed((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!has_needed(1 << CAP_BPF));
        assert!(!has_needed(1 << 12)); // CAP_NET_ADMIN alone
        assert!(!has_needed(0));
    }
}
