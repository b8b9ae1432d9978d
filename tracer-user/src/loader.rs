//! Loads the eBPF object, fills its load-time globals, attaches the programs of
//! `tracer_common::hooks`, and picks how connect()'s own return is observed on this kernel.
//! Owns the programs' links for the run.
use std::{
    collections::BTreeMap,
    fmt,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use tracer_common::{
    Config, DestKey, ListenerKey, MAX_RINGS, Owner, SyscallOffsets, connect_hook, counter, globals,
    hooks::{self, Attach, Hook, When},
    maps,
};

use crate::{
    cli::ConnectHookChoice,
    config::{Filters, Tuning},
    exit::StartError,
    kernel::{self, btf, privileges, tracefs},
};

/// The eBPF object built by build.rs (empty when built without the eBPF toolchain).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/conntrace"));

/// How connect()'s own return value is observed: where failures before any SYN (no
/// route, no local port, a local policy) come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectHook {
    /// fexit on `__sys_connect_file` (BPF trampolines): exact, nearly free.
    Fexit,
    /// kprobe and kretprobe on `__sys_connect_file`: exact.
    Kretprobe,
    /// No hook on connect(): failed route lookups and the state machine are the
    /// evidence (kernels without fentry and kprobes). A local policy's EPERM is not seen.
    Tracepoint,
    /// The syscall tracepoints: exact, but every system call on the host pays for it.
    Syscalls,
}

impl ConnectHook {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectHook::Fexit => "fexit",
            ConnectHook::Kretprobe => "kretprobe",
            ConnectHook::Tracepoint => "tracepoint",
            ConnectHook::Syscalls => "syscalls",
        }
    }

    /// The value of `Config::connect_hook`.
    fn config_value(self) -> u8 {
        match self {
            ConnectHook::Fexit => connect_hook::FEXIT,
            ConnectHook::Kretprobe => connect_hook::KRETPROBE,
            ConnectHook::Tracepoint => connect_hook::NONE,
            ConnectHook::Syscalls => connect_hook::SYSCALLS,
        }
    }

    /// The hooks `auto` tries, best first.
    const AUTO: [ConnectHook; 3] = [
        ConnectHook::Fexit,
        ConnectHook::Kretprobe,
        ConnectHook::Tracepoint,
    ];
}

impl fmt::Display for ConnectHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel side should send, besides failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emit {
    pub successes: bool,
    pub closes: bool,
    pub retransmits: bool,
    /// Follow connections accepted by listeners on this host too.
    pub accepted: bool,
}

/// The loaded, attached programs and the maps the collector reads.
pub struct Tracer {
    /// The event rings in use, one reader each.
    pub rings: Vec<RingBuf<MapData>>,
    /// Records may wait in the ring buffers without a wake-up (`--wakeup-batch`): the
    /// collector must also read them on a timer.
    pub held_back: bool,
    pub programs: Programs,
    pub hook: ConnectHook,
    /// Why the better hooks were not used, for the log.
    pub hook_fallbacks: Vec<String>,
    pub kernel_release: String,
    /// Names of the kernel's drop reasons, by value (they differ between kernels).
    pub drop_reasons: BTreeMap<u32, String>,
    /// Nanoseconds per jiffy (the kernel's `CONFIG_HZ`): TCP keeps some times in jiffies.
    pub ns_per_jiffy: u64,
}

/// What is the same for every load attempt.
struct Plan<'a> {
    filters: &'a Filters,
    tuning: &'a Tuning,
    emit: Emit,
    layout: btf::KernelLayout,
    syscall_offsets: Option<SyscallOffsets>,
}

impl Plan<'_> {
    /// Connections accepted here are followed when asked for, unless a process filter is
    /// on (an accepted connection has no connecting process to match).
    fn follows_accepted(&self) -> bool {
        self.emit.accepted && self.filters.pid.is_none() && self.filters.comm.is_none()
    }
}

/// Loads and attaches everything, or says in one line why it cannot.
pub fn load(filters: &Filters, tuning: &Tuning, emit: Emit) -> anyhow::Result<Tracer> {
    if OBJECT.is_empty() {
        return Err(StartError::NoEbpfObject(
            "this conntrace was built without its eBPF programs (bpf-linker or the eBPF \
             toolchain was missing): run `cargo xtask setup`, then rebuild"
                .into(),
        )
        .into());
    }
    privileges::check()?;
    privileges::raise_memlock();
    let hz = kernel::HzProbe::start();
    let layout = btf::kernel_layout(std::path::Path::new(btf::VMLINUX))?;
    let syscall_offsets = match tuning.connect_hook {
        ConnectHookChoice::Syscalls => {
            let tracefs = tracefs::locate(tuning.tracefs.as_deref())?;
            Some(tracefs::syscall_offsets(&tracefs)?)
        }
        _ => None,
    };
    let plan = Plan {
        filters,
        tuning,
        emit,
        layout,
        syscall_offsets,
    };
    let candidates: &[ConnectHook] = match tuning.connect_hook {
        ConnectHookChoice::Auto => &ConnectHook::AUTO,
        ConnectHookChoice::Fexit => &[ConnectHook::Fexit],
        ConnectHookChoice::Kretprobe => &[ConnectHook::Kretprobe],
        ConnectHookChoice::Tracepoint => &[ConnectHook::Tracepoint],
        ConnectHookChoice::Syscalls => &[ConnectHook::Syscalls],
    };
    let mut fallbacks = Vec::new();
    for &hook in candidates {
        match load_with(&plan, hook) {
            Ok(ebpf) => {
                let tracer = finish(ebpf, &plan, hook, fallbacks).map(|mut t| {
                    t.ns_per_jiffy = hz.ns_per_jiffy();
                    t
                });
                release_startup_memory();
                return tracer;
            }
            Err(LoadError::Hook(e)) if candidates.len() > 1 => {
                fallbacks.push(format!(
                    "{hook} on {} unavailable: {e:#}",
                    hooks::CONNECT_FUNCTION
                ));
            }
            Err(LoadError::Hook(e)) => {
                return Err(StartError::KernelUnsupported(format!(
                    "--connect-hook {hook} is not available here: {e:#}"
                ))
                .into());
            }
            Err(LoadError::Other(e)) => return Err(e),
        }
    }
    Err(anyhow!("no connect hook could be attached"))
}

/// Gives back to the system what loading used once: parsing the kernel's BTF for fexit
/// takes tens of megabytes, freed but kept by the allocator, which would otherwise stay
/// in conntrace's resident memory for its whole run.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why one load attempt failed: its connect hook (try the next), or anything else.
enum LoadError {
    Hook(anyhow::Error),
    Other(anyhow::Error),
}

/// Loads the object for `hook` and attaches its programs, the connect hook first (so that
/// a kernel without it fails fast, before anything else is attached).
fn load_with(plan: &Plan<'_>, hook: ConnectHook) -> Result<Ebpf, LoadError> {
    if matches!(hook, ConnectHook::Fexit | ConnectHook::Kretprobe)
        && !plan.layout.has_connect_function
    {
        return Err(LoadError::Hook(anyhow!(
            "the kernel has no {} function",
            hooks::CONNECT_FUNCTION
        )));
    }
    if hook == ConnectHook::Kretprobe && !std::path::Path::new(KPROBE_PMU).exists() {
        return Err(LoadError::Hook(anyhow!(
            "the kernel has no kprobes ({KPROBE_PMU} is missing)"
        )));
    }
    let config = kernel_config(plan, hook);
    let syscall_offsets = plan.syscall_offsets.unwrap_or_default();
    let mut loader = EbpfLoader::new();
    loader
        .override_global(globals::KERNEL_OFFSETS, &plan.layout.offsets, true)
        .override_global(globals::CONFIG, &config, true)
        .override_global(globals::SYSCALL_OFFSETS, &syscall_offsets, true)
        .map_max_entries(maps::CONNECTING, plan.tuning.max_connections)
        .map_max_entries(maps::ESTABLISHED, plan.tuning.max_established);
    for (i, ring) in maps::EVENTS.iter().enumerate() {
        let bytes = if i < usize::from(config.rings) {
            plan.tuning.ring_buffer_bytes
        } else {
            page_size()
        };
        loader.map_max_entries(ring, bytes);
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| LoadError::Other(load_error(&e)))?;
    let wanted: Vec<Hook> = hooks::ALL
        .into_iter()
        .filter(|h| h.when == When::ConnectHook(hook.config_value()))
        .chain(hooks::ALL.into_iter().filter(|h| h.when == When::Always))
        .collect();
    let btf = match hook {
        ConnectHook::Fexit => Some(Btf::from_sys_fs().context("read kernel BTF")),
        _ => None,
    }
    .transpose()
    .map_err(LoadError::Other)?;
    for h in wanted {
        let attached = attach(&mut ebpf, &h, btf.as_ref());
        match (h.when, attached) {
            (_, Ok(())) => {}
            (When::ConnectHook(_), Err(e)) if hook != ConnectHook::Tracepoint => {
                return Err(LoadError::Hook(e));
            }
            (_, Err(e)) => return Err(LoadError::Other(e)),
        }
    }
    fill_dest_filter(&mut ebpf, plan.filters).map_err(LoadError::Other)?;
    Ok(ebpf)
}

fn finish(
    mut ebpf: Ebpf,
    plan: &Plan<'_>,
    hook: ConnectHook,
    hook_fallbacks: Vec<String>,
) -> anyhow::Result<Tracer> {
    let rings = (0..usize::from(rings_in_use(plan.tuning)))
        .map(|i| {
            let name = maps::EVENTS[i];
            RingBuf::try_from(
                ebpf.take_map(name)
                    .with_context(|| format!("map {name} missing"))?,
            )
            .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map(maps::COUNTERS)
            .context("map COUNTERS missing")?,
    )?;
    if plan.follows_accepted() {
        seed_listeners(&mut ebpf);
    }
    Ok(Tracer {
        rings,
        held_back: plan.tuning.wakeup_batch > 0,
        programs: Programs {
            kernel_log: kernel_logger(&mut ebpf),
            warned_full: [0; 2],
            ebpf,
            counters,
        },
        hook,
        hook_fallbacks,
        kernel_release: kernel::release(),
        drop_reasons: plan.layout.drop_reason_names.iter().cloned().collect(),
        ns_per_jiffy: 4_000_000,
    })
}

/// Tells the kernel side who listens now: it learns later listeners at their listen(),
/// and attributes accepted connections by port.
fn seed_listeners(ebpf: &mut Ebpf) {
    let Some(map) = ebpf.map_mut(maps::LISTENERS) else {
        return;
    };
    let Ok(mut map) = aya::maps::HashMap::<_, ListenerKey, Owner>::try_from(map) else {
        tracing::debug!("map LISTENERS has an unexpected type");
        return;
    };
    let found = crate::listeners::current();
    tracing::debug!("{} listeners found at start", found.len());
    for (key, owner) in found {
        if let Err(e) = map.insert(key, owner, 0) {
            tracing::debug!("remember listener on port {}: {e}", key.port);
        }
    }
}

/// Rings in use: one per four CPUs, at most [`MAX_RINGS`], unless `--rings` says.
fn rings_in_use(tuning: &Tuning) -> u8 {
    tuning.rings.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        u8::try_from(cpus.div_ceil(4).clamp(1, MAX_RINGS)).unwrap_or(1)
    })
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn kernel_config(plan: &Plan<'_>, hook: ConnectHook) -> Config {
    let filters = plan.filters;
    let layout = &plan.layout;
    let comm = filters.comm_bytes();
    let mut drop_reasons = [0u64; 4];
    for &(_, value) in &layout.drop_reasons {
        if let Some(word) = drop_reasons.get_mut((value / 64) as usize) {
            *word |= 1 << (value % 64);
        }
    }
    Config {
        drop_reasons,
        pid: filters.pid.unwrap_or(0),
        netns: filters.netns.unwrap_or(0),
        memory_cgrp_id: layout.memory_cgrp_id.unwrap_or(0),
        _pad0: 0,
        dport: filters.port.unwrap_or(0),
        dest_filter: u8::from(!filters.dests.is_empty()),
        comm_filter: u8::from(comm.is_some()),
        emit_success: u8::from(plan.emit.successes),
        emit_retransmits: u8::from(plan.emit.retransmits),
        emit_closed: u8::from(plan.emit.closes),
        wakeup_batch: plan.tuning.wakeup_batch,
        rings: rings_in_use(plan.tuning),
        connect_hook: hook.config_value(),
        read_cgroup_v1: u8::from(
            layout.memory_cgrp_id.is_some() && std::path::Path::new(CGROUP_V1_MEMORY).is_dir(),
        ),
        follow_accepted: u8::from(plan.follows_accepted()),
        retransmit_has_err: u8::from(layout.retransmit_has_err),
        _pad: [0; 3],
        comm: comm.unwrap_or_default(),
    }
}

/// Present when the kernel can create kprobes through perf (what aya attaches with).
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Where a v1 memory hierarchy is mounted on hybrid and v1 hosts.
const CGROUP_V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// Turns a load failure into the one line a user needs.
fn load_error(err: &aya::EbpfError) -> anyhow::Error {
    let text = format!("{err:#}");
    let source = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_default();
    if text.contains("Operation not permitted") || source.contains("Operation not permitted") {
        return StartError::NoPrivilege(format!(
            "the kernel refused to load conntrace's eBPF programs ({text}): run as root or with \
             CAP_BPF and CAP_PERFMON; check kernel.unprivileged_bpf_disabled and lockdown"
        ))
        .into();
    }
    if maps::EVENTS.iter().any(|ring| text.contains(ring)) {
        return StartError::KernelUnsupported(format!(
            "could not create the BPF ring buffers ({text}): conntrace needs Linux 5.8 or newer"
        ))
        .into();
    }
    anyhow!("load the eBPF programs: {text}: {source}")
}

fn fill_dest_filter(ebpf: &mut Ebpf, filters: &Filters) -> anyhow::Result<()> {
    if filters.dests.is_empty() {
        return Ok(());
    }
    let mut trie: LpmTrie<_, DestKey, u8> = LpmTrie::try_from(
        ebpf.map_mut(maps::DEST_FILTER)
            .context("map DEST_FILTER missing")?,
    )?;
    for cidr in &filters.dests {
        trie.insert(&Key::new(cidr.prefix_len, cidr.addr), 1, 0)
            .context("fill the --dest filter")?;
    }
    Ok(())
}

/// Loads and attaches one program where its hook says.
fn attach(ebpf: &mut Ebpf, hook: &Hook, btf: Option<&Btf>) -> anyhow::Result<()> {
    let name = hook.program;
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?;
    match hook.attach {
        Attach::RawTracepoint(tp) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load().with_context(|| format!("load program {name}"))?;
            p.attach(tp).map_err(|e| {
                StartError::KernelUnsupported(format!("attach raw tracepoint {tp}: {e}"))
            })?;
        }
        Attach::Tracepoint(category, tp) => {
            let p: &mut TracePoint = program.try_into()?;
            p.load().with_context(|| format!("load program {name}"))?;
            p.attach(category, tp).map_err(|e| {
                StartError::KernelUnsupported(format!("attach tracepoint {category}:{tp}: {e}"))
            })?;
        }
        Attach::FExit(function) => {
            let btf = btf.context("kernel BTF not read")?;
            let p: &mut FExit = program.try_into()?;
            p.load(function, btf).context("load")?;
            p.attach().context("attach")?;
        }
        Attach::KProbe(function) | Attach::KRetProbe(function) => {
            let p: &mut KProbe = program.try_into()?;
            p.load().context("load")?;
            p.attach(function, 0).context("attach")?;
        }
    }
    Ok(())
}

/// Kernel-side counters, summed over CPUs (and per CPU for losses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub submitted: u64,
    pub lost: u64,
    pub lost_per_cpu: Vec<u64>,
    /// Connects in flight followed now.
    pub connecting: u64,
    /// Established connections followed now.
    pub established: u64,
    /// Connects not followed: the connect map was full.
    pub connects_unfollowed: u64,
    /// Established connections not followed: the established map was full.
    pub established_unfollowed: u64,
    /// connect() calls whose return could not be followed.
    pub calls_unfollowed: u64,
    /// Failed sockets not remembered (their stored error may be reported again).
    pub failed_unremembered: u64,
    /// Connections ended at their socket's destruction: their close was skipped.
    pub swept: u64,
    pub read_errors: u64,
    /// Runs of each program the kernel skipped (it skips one that would nest inside
    /// another BPF program on the same CPU): events that were never seen.
    pub skipped: BTreeMap<String, u64>,
}

impl KernelCounters {
    /// Program runs the kernel skipped, over all programs.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// The attached programs (detached when this is dropped), their counters and their log.
pub struct Programs {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    kernel_log: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Unfollowed connects and established connections when last warned about.
    warned_full: [u64; 2],
}

/// The eBPF programs' own log (aya-log), forwarded to conntrace's log on stderr.
fn kernel_logger(ebpf: &mut Ebpf) -> Option<EbpfLogger<&'static dyn log::Log>> {
    EbpfLogger::init(ebpf)
        .map_err(|e| tracing::debug!("no log from the eBPF programs: {e}"))
        .ok()
}

impl Programs {
    /// Forwards what the eBPF programs logged since the last call, and warns when a map
    /// filled up. Both are rare, so reading them on the output's flush tick is enough.
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = &mut self.kernel_log {
            logger.flush();
        }
        self.warn_if_full(0, counter::CONNECTING_FULL, "connects", "--max-connections");
        self.warn_if_full(
            1,
            counter::ESTABLISHED_FULL,
            "established connections",
            "--max-established",
        );
    }

    /// Says on stderr when a map was full, at most once per doubling of the count, so a
    /// storm cannot flood the log.
    fn warn_if_full(&mut self, slot: usize, index: u32, what: &str, flag: &str) {
        let Ok(full) = self.sum_counter(index) else {
            return;
        };
        let warned = self.warned_full[slot];
        if full > warned && (warned == 0 || full >= 2 * warned) {
            tracing::warn!("map full: {full} {what} not followed so far (raise {flag})");
            self.warned_full[slot] = full;
        }
    }

    fn per_cpu(&self, index: u32) -> anyhow::Result<Vec<u64>> {
        Ok(self
            .counters
            .get(&index, 0)
            .with_context(|| format!("read counter {index}"))?
            .to_vec())
    }

    fn sum_counter(&self, index: u32) -> anyhow::Result<u64> {
        Ok(self.per_cpu(index)?.iter().sum())
    }

    pub fn read_counters(&self) -> anyhow::Result<KernelCounters> {
        let sum = |index: u32| self.sum_counter(index);
        let lost_per_cpu = self.per_cpu(counter::LOST)?;
        Ok(KernelCounters {
            submitted: sum(counter::SUBMITTED)?,
            lost: lost_per_cpu.iter().sum(),
            lost_per_cpu,
            connecting: sum(counter::CONNECTING_INSERTED)?
                .saturating_sub(sum(counter::CONNECTING_REMOVED)?),
            established: sum(counter::ESTABLISHED_INSERTED)?
                .saturating_sub(sum(counter::ESTABLISHED_REMOVED)?),
            connects_unfollowed: sum(counter::CONNECTING_FULL)?,
            established_unfollowed: sum(counter::ESTABLISHED_FULL)?,
            calls_unfollowed: sum(counter::CALLS_FULL)?,
            failed_unremembered: sum(counter::FAILED_SOCKS_FULL)?,
            swept: sum(counter::SWEPT)?,
            read_errors: sum(counter::READ_ERRORS)?,
            skipped: self.skipped_runs(),
        })
    }

    /// Each attached program's `recursion_misses` (`bpf_prog_info`, Linux 5.12+), by name.
    fn skipped_runs(&self) -> BTreeMap<String, u64> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let misses = recursion_misses(program)?;
                Some((name.to_owned(), misses))
            })
            .collect()
    }
}

/// How often the kernel skipped `program` (`bpf_prog_info.recursion_misses`); `None` when
/// it is not loaded or the kernel does not say.
fn recursion_misses(program: &Program) -> Option<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    let fd = program.fd().ok()?;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = u32::try_from(fd.as_fd().as_raw_fd()).ok()?;
    attr.info.info_len = u32::try_from(size_of::<bpf_prog_info>()).ok()?;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most info_len bytes into `info`, which
    // lives until the call returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<bpf_attr>(),
        )
    };
    (rc == 0).then_some(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hook's program is in the object, of the kind its attachment needs, and every
    /// program in the object has a hook: a name changed on one side only fails here.
    #[test]
    fn the_hook_table_matches_the_object() {
        use aya_obj::ProgramSection as S;
        if OBJECT.is_empty() {
            // Built without the eBPF toolchain: there is no object to check. `cargo xtask
            // test` always builds it, so this runs in CI.
            assert!(
                std::env::var("CI").is_err(),
                "the eBPF object must be built in CI"
            );
            return;
        }
        let object = aya_obj::Object::parse(OBJECT).expect("parse the eBPF object");
        for hook in hooks::ALL {
            let program = object
                .programs
                .get(hook.program)
                .unwrap_or_else(|| panic!("program {} missing from the object", hook.program));
            let ok = matches!(
                (&hook.attach, &program.section),
                (Attach::RawTracepoint(_), S::RawTracePoint)
                    | (Attach::Tracepoint(..), S::TracePoint)
                    | (Attach::FExit(_), S::FExit { .. })
                    | (Attach::KProbe(_), S::KProbe)
                    | (Attach::KRetProbe(_), S::KRetProbe)
            );
            assert!(
                ok,
                "{}: {:?} vs {:?}",
                hook.program, hook.attach, program.section
            );
        }
        for name in object.programs.keys() {
            assert!(
                hooks::ALL.iter().any(|h| h.program == name),
                "program {name} has no hook"
            );
        }
    }

    #[test]
    fn auto_tries_the_cheapest_exact_hook_first() {
        assert_eq!(ConnectHook::AUTO[0], ConnectHook::Fexit);
        assert!(!ConnectHook::AUTO.contains(&ConnectHook::Syscalls));
    }
}
