//! Loads the eBPF object, fills its load-time globals, attaches every program, and picks
//! the `tcp_connect` hook this kernel allows. Owns the programs' links for the run.
use std::fmt;

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{FEntry, KProbe, TracePoint},
};
use aya_log::EbpfLogger;
use tracer_common::{Config, DestKey, counter, globals, maps};

use crate::{
    cli::ConnectHookChoice,
    config::{Filters, Tuning},
    exit::StartError,
    kernel::{self, btf, privileges, tracefs},
};

/// The eBPF object built by build.rs (empty when built without the eBPF toolchain).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/conntrace"));

/// The tracepoints every run attaches: (program, category, name).
const TRACEPOINTS: [(&str, &str, &str); 6] = [
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
];

/// How the moment a SYN leaves is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectHook {
    /// fentry on `tcp_connect` (BPF trampolines).
    Fentry,
    /// kprobe on `tcp_connect`.
    Kprobe,
    /// No hook on `tcp_connect`: the CLOSE→SYN_SENT transition stands in for it.
    StateTransition,
}

impl ConnectHook {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectHook::Fentry => "fentry",
            ConnectHook::Kprobe => "kprobe",
            ConnectHook::StateTransition => "tracepoint",
        }
    }
}

impl fmt::Display for ConnectHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel side should send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emit {
    pub successes: bool,
    pub closes: bool,
    pub retransmits: bool,
}

/// The loaded, attached programs and the maps the collector reads.
pub struct Tracer {
    pub events: RingBuf<MapData>,
    /// Records may wait in the ring buffer without a wake-up (`--wakeup-batch`): the
    /// collector must also read it on a timer.
    pub held_back: bool,
    pub programs: Programs,
    pub hook: ConnectHook,
    /// Why the better hooks were not used, for the log.
    pub hook_fallbacks: Vec<String>,
    pub kernel_release: String,
}

/// Loads and attaches everything, or says in one line why it cannot.
pub fn load(filters: &Filters, tuning: &Tuning, emit: Emit) -> anyhow::Result<Tracer> {
    if OBJECT.is_empty() {
        return Err(StartError::NoEbpfObject(
            "this conntrace was built without its eBPF programs (bpf-linker or nightly rust-src was \
             missing): run `cargo xtask setup`, then rebuild"
                .into(),
        )
        .into());
    }
    privileges::check()?;
    privileges::raise_memlock();
    let tracefs = tracefs::locate(tuning.tracefs.as_deref())?;
    let tp_offsets = tracefs::tracepoint_offsets(&tracefs)?;
    let kernel_offsets = btf::kernel_offsets(std::path::Path::new(btf::VMLINUX))?;
    let config = kernel_config(filters, emit, tuning.wakeup_batch);

    let mut ebpf = EbpfLoader::new()
        .override_global(globals::TP_OFFSETS, &tp_offsets, true)
        .override_global(globals::KERNEL_OFFSETS, &kernel_offsets, true)
        .override_global(globals::CONFIG, &config, true)
        .map_max_entries(maps::EVENTS, tuning.ring_buffer_bytes)
        .map_max_entries(maps::SOCKS, tuning.max_connections)
        .load(OBJECT)
        .map_err(|e| load_error(&e))?;

    fill_dest_filter(&mut ebpf, filters)?;
    for (program, category, name) in TRACEPOINTS {
        attach_tracepoint(&mut ebpf, program, category, name)?;
    }
    let (hook, hook_fallbacks) = attach_connect_hook(&mut ebpf, tuning.connect_hook)?;

    let events = RingBuf::try_from(ebpf.take_map(maps::EVENTS).context("map EVENTS missing")?)?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map(maps::COUNTERS)
            .context("map COUNTERS missing")?,
    )?;
    Ok(Tracer {
        events,
        held_back: tuning.wakeup_batch > 0,
        programs: Programs {
            kernel_log: kernel_logger(&mut ebpf),
            warned_socks_full: 0,
            _ebpf: ebpf,
            counters,
        },
        hook,
        hook_fallbacks,
        kernel_release: kernel::release(),
    })
}

fn kernel_config(filters: &Filters, emit: Emit, wakeup_batch: u8) -> Config {
    let comm = filters.comm_bytes();
    Config {
        pid: filters.pid.unwrap_or(0),
        netns: filters.netns.unwrap_or(0),
        dport: filters.port.unwrap_or(0),
        dest_filter: u8::from(!filters.dests.is_empty()),
        comm_filter: u8::from(comm.is_some()),
        emit_success: u8::from(emit.successes),
        emit_retransmits: u8::from(emit.retransmits),
        emit_closed: u8::from(emit.closes),
        wakeup_batch,
        comm: comm.unwrap_or_default(),
    }
}

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
    if text.contains(maps::EVENTS) {
        return StartError::KernelUnsupported(format!(
            "could not create the BPF ring buffer ({text}): conntrace needs Linux 5.8 or newer"
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

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> anyhow::Result<()> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()?;
    tp.load()
        .with_context(|| format!("load program {program}"))?;
    tp.attach(category, name).map_err(|e| {
        StartError::KernelUnsupported(format!("attach tracepoint {category}:{name}: {e}"))
    })?;
    Ok(())
}

/// With `auto`, tries fentry, then kprobe, on `tcp_connect`, and falls back to the state
/// transition, recording why each step did not work. A hook named on the command line
/// must attach, or the run fails saying why.
fn attach_connect_hook(
    ebpf: &mut Ebpf,
    choice: ConnectHookChoice,
) -> anyhow::Result<(ConnectHook, Vec<String>)> {
    let required = |hook: ConnectHook, result: anyhow::Result<()>| {
        result.map(|()| (hook, Vec::new())).map_err(|e| {
            StartError::KernelUnsupported(format!(
                "{hook} on tcp_connect is not available here: {e:#}"
            ))
            .into()
        })
    };
    match choice {
        ConnectHookChoice::Fentry => return required(ConnectHook::Fentry, attach_fentry(ebpf)),
        ConnectHookChoice::Kprobe => return required(ConnectHook::Kprobe, attach_kprobe(ebpf)),
        ConnectHookChoice::Tracepoint => return Ok((ConnectHook::StateTransition, Vec::new())),
        ConnectHookChoice::Auto => {}
    }
    let mut fallbacks = Vec::new();
    match attach_fentry(ebpf) {
        Ok(()) => return Ok((ConnectHook::Fentry, fallbacks)),
        Err(e) => fallbacks.push(format!("fentry on tcp_connect unavailable: {e:#}")),
    }
    match attach_kprobe(ebpf) {
        Ok(()) => return Ok((ConnectHook::Kprobe, fallbacks)),
        Err(e) => fallbacks.push(format!("kprobe on tcp_connect unavailable: {e:#}")),
    }
    Ok((ConnectHook::StateTransition, fallbacks))
}

fn attach_fentry(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    // Parsed here and dropped at once: the whole kernel BTF is tens of megabytes.
    let btf = Btf::from_sys_fs().context("read kernel BTF")?;
    let prog: &mut FEntry = ebpf
        .program_mut("tcp_connect_fentry")
        .context("program missing")?
        .try_into()?;
    prog.load("tcp_connect", &btf).context("load")?;
    prog.attach().context("attach")?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &mut KProbe = ebpf
        .program_mut("tcp_connect_kprobe")
        .context("program missing")?
        .try_into()?;
    prog.load().context("load")?;
    prog.attach("tcp_connect", 0).context("attach")?;
    Ok(())
}

/// Kernel-side counters, summed over CPUs (and per CPU for losses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub submitted: u64,
    pub lost: u64,
    pub lost_per_cpu: Vec<u64>,
    pub in_flight: u64,
    pub socks_full: u64,
    pub calls_full: u64,
    pub read_errors: u64,
}

/// The attached programs (detached when this is dropped), their counters and their log.
pub struct Programs {
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    kernel_log: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Connections not followed (map full) when last warned about.
    warned_socks_full: u64,
}

/// The eBPF programs' own warnings (aya-log), forwarded to conntrace's log on stderr.
fn kernel_logger(ebpf: &mut Ebpf) -> Option<EbpfLogger<&'static dyn log::Log>> {
    EbpfLogger::init(ebpf)
        .map_err(|e| tracing::debug!("no log from the eBPF programs: {e}"))
        .ok()
}

impl Programs {
    /// Forwards what the eBPF programs logged since the last call. Their log is only for
    /// rare conditions (a full map), so reading it on the output's flush tick is enough.
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = &mut self.kernel_log {
            logger.flush();
        }
        self.warn_if_map_full();
    }

    /// Says on stderr when connections went unfollowed because the connection map was
    /// full, at most once per doubling of their number, so a storm cannot flood the log.
    fn warn_if_map_full(&mut self) {
        let Ok(full) = self.sum_counter(counter::SOCKS_FULL) else {
            return;
        };
        if full > self.warned_socks_full
            && (self.warned_socks_full == 0 || full >= 2 * self.warned_socks_full)
        {
            tracing::warn!(
                "connection map full: {full} connections not followed so far (raise --max-connections)"
            );
            self.warned_socks_full = full;
        }
    }

    fn sum_counter(&self, index: u32) -> anyhow::Result<u64> {
        Ok(self
            .counters
            .get(&index, 0)
            .with_context(|| format!("read counter {index}"))?
            .iter()
            .sum())
    }

    pub fn read_counters(&self) -> anyhow::Result<KernelCounters> {
        let per_cpu = |index: u32| -> anyhow::Result<Vec<u64>> {
            Ok(self
                .counters
                .get(&index, 0)
                .with_context(|| format!("read counter {index}"))?
                .to_vec())
        };
        let sum = |index: u32| -> anyhow::Result<u64> { Ok(per_cpu(index)?.iter().sum()) };
        let lost_per_cpu = per_cpu(counter::LOST)?;
        Ok(KernelCounters {
            submitted: sum(counter::SUBMITTED)?,
            lost: lost_per_cpu.iter().sum(),
            lost_per_cpu,
            in_flight: sum(counter::SOCKS_INSERTED)?.saturating_sub(sum(counter::SOCKS_REMOVED)?),
            socks_full: sum(counter::SOCKS_FULL)?,
            calls_full: sum(counter::CALLS_FULL)?,
            read_errors: sum(counter::READ_ERRORS)?,
        })
    }
}
