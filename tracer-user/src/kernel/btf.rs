//! What the kernel's own BTF (`/sys/kernel/btf/vmlinux`) tells about its layout. Our eBPF
//! programs are not CO-RE relocated (aya's Rust programs cannot be yet), so the fields
//! they read through pointers are located here, their sizes checked against what the
//! programs read, and handed over as a load-time global; so are the enum values that move
//! between kernels (drop reasons) and the shapes of the raw tracepoints' arguments.
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use btf_rs::{Backend, Btf, Type};
use tracer_common::KernelOffsets;

use crate::exit::StartError;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The drop reasons (`enum skb_drop_reason`, less the `SKB_DROP_REASON_` prefix) that mean
/// a packet was dropped on this host on its way: by its firewall, by neighbour resolution,
/// for want of a route, by a qdisc or a BPF program on egress, by an LSM. Names a kernel
/// does not have are skipped.
pub const LOCAL_DROP_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "IP_OUTNOROUTES",
    "IP_INNOROUTES",
    "NEIGH_CREATEFAIL",
    "NEIGH_FAILED",
    "NEIGH_QUEUEFULL",
    "NEIGH_DEAD",
    "BPF_CGROUP_EGRESS",
    "TC_EGRESS",
    "QDISC_DROP",
    "QDISC_OVERLIMIT",
    "QDISC_CONGESTED",
    "SECURITY_HOOK",
    "XFRM_POLICY",
    "IPV6DISABLED",
    "IP_RPFILTER",
];

/// Everything conntrace needs to know of this kernel's BTF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub offsets: KernelOffsets,
    /// `memory_cgrp_id`, when the kernel has the memory controller.
    pub memory_cgrp_id: Option<u32>,
    /// The local drop reasons this kernel has: (name, value).
    pub drop_reasons: Vec<(&'static str, u32)>,
    /// Every `enum skb_drop_reason` value by name, for the records.
    pub drop_reason_names: Vec<(u32, String)>,
    /// `tcp_retransmit_skb` passes the retransmit's error (Linux 6.13+).
    pub retransmit_has_err: bool,
    /// The kernel has `__sys_connect_file`, where connect()'s return is hooked.
    pub has_connect_function: bool,
}

/// Reads the kernel's BTF and resolves its layout, or says in one line what is missing.
pub fn kernel_layout(vmlinux: &Path) -> Result<KernelLayout, StartError> {
    // Mmap: we look up a few dozen types once; parsing all of vmlinux's BTF up front would
    // cost tens of megabytes and most of conntrace's start-up time. Kernels before 6.15
    // cannot mmap the sysfs file (ENODEV): parse it whole there.
    let btf = Btf::from_file_with_backend(vmlinux, Backend::Mmap)
        .or_else(|_| Btf::from_file_with_backend(vmlinux, Backend::Cache))
        .map_err(|e| {
            StartError::KernelUnsupported(format!(
                "kernel BTF is required ({}: {e}); the kernel needs CONFIG_DEBUG_INFO_BTF=y",
                vmlinux.display()
            ))
        })?;
    resolve_layout(&btf).map_err(|e| StartError::KernelUnsupported(format!("kernel BTF: {e:#}")))
}

fn resolve_layout(btf: &Btf) -> anyhow::Result<KernelLayout> {
    let memory_cgrp_id = enum_value(btf, "cgroup_subsys_id", "memory_cgrp_id")?;
    let drop_reason_names = enum_members(btf, "skb_drop_reason")?
        .into_iter()
        .filter_map(|(name, v)| Some((v, name.strip_prefix("SKB_DROP_REASON_")?.to_owned())))
        .collect::<Vec<_>>();
    let value_of = |name: &str| {
        drop_reason_names
            .iter()
            .find(|(_, n)| n == name)
            .map(|&(v, _)| v)
    };
    let drop_reasons = LOCAL_DROP_REASONS
        .iter()
        .filter_map(|&name| Some((name, value_of(name)?)))
        .collect();
    Ok(KernelLayout {
        offsets: resolve_offsets(btf, memory_cgrp_id)?,
        memory_cgrp_id,
        drop_reasons,
        retransmit_has_err: tracepoint_args(btf, "tcp_retransmit_skb")? >= 3,
        has_connect_function: btf
            .resolve_types_by_name(tracer_common::hooks::CONNECT_FUNCTION)
            .is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Func(_)))),
        drop_reason_names,
    })
}

/// Every offset the eBPF programs read through, each checked for the size they read.
fn resolve_offsets(btf: &Btf, memory_cgrp_id: Option<u32>) -> anyhow::Result<KernelOffsets> {
    resolve_offsets_with(btf, memory_cgrp_id, |_, _| None)
}

/// [`resolve_offsets`], with the size read of some members overridden (for tests).
fn resolve_offsets_with(
    btf: &Btf,
    memory_cgrp_id: Option<u32>,
    size_read: impl Fn(&str, &str) -> Option<usize>,
) -> anyhow::Result<KernelOffsets> {
    let at = |ty: &str, path: &str, size: usize| -> anyhow::Result<u32> {
        let size = size_read(ty, path).unwrap_or(size);
        let m = member(btf, ty, path).with_context(|| format!("struct {ty}.{path}"))?;
        if m.size != size {
            bail!(
                "struct {ty}.{path} is {} bytes, conntrace reads {size}",
                m.size
            );
        }
        Ok(m.offset)
    };
    // Members only some kernels have (policy routing): 0, which no such member can be at,
    // tells the programs they are absent.
    let optional = |ty: &str, path: &str, size: usize| -> anyhow::Result<u32> {
        match member(btf, ty, path) {
            Ok(_) => at(ty, path, size),
            Err(_) => Ok(0),
        }
    };
    let subsys = member(btf, "css_set", "subsys").context("struct css_set.subsys")?;
    let css_set_memory = memory_cgrp_id.map_or(0, |id| subsys.offset + 8 * id);
    Ok(KernelOffsets {
        sock_family: at("sock", "__sk_common.skc_family", 2)?,
        sock_state: at("sock", "__sk_common.skc_state", 1)?,
        sock_sport: at("inet_sock", "inet_sport", 2)?,
        sock_dport: at("sock", "__sk_common.skc_dport", 2)?,
        sock_daddr: at("sock", "__sk_common.skc_daddr", 4)?,
        sock_rcv_saddr: at("sock", "__sk_common.skc_rcv_saddr", 4)?,
        sock_v6_daddr: at("sock", "__sk_common.skc_v6_daddr", 16)?,
        sock_v6_rcv_saddr: at("sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
        sock_net: at("sock", "__sk_common.skc_net.net", 8)?,
        sock_protocol: at("sock", "sk_protocol", 2)?,
        sock_err: at("sock", "sk_err", 4)?,
        sock_err_soft: at("sock", "sk_err_soft", 4)?,
        sock_error_queue_tail: at("sock", "sk_error_queue.prev", 8)?,
        sock_error_queue_len: at("sock", "sk_error_queue.qlen", 4)?,
        tcp_segs_out: at("tcp_sock", "segs_out", 4)?,
        tcp_bytes_received: at("tcp_sock", "bytes_received", 8)?,
        tcp_bytes_sent: at("tcp_sock", "bytes_sent", 8)?,
        tcp_lsndtime: at("tcp_sock", "lsndtime", 4)?,
        tcp_lrcvtime: at("tcp_sock", "inet_conn.icsk_ack.lrcvtime", 4)?,
        net_inum: at("net", "ns.inum", 4)?,
        net_fib4_custom_rules: optional("net", "ipv4.fib_has_custom_rules", 1)?,
        net_fib6_custom_rules: optional("net", "ipv6.fib6_has_custom_rules", 1)?,
        net_fib6_null_entry: at("net", "ipv6.fib6_null_entry", 8)?,
        skb_sk: at("sk_buff", "sk", 8)?,
        skb_queued_errno: at("sk_buff", "cb", 48)? + at("sock_exterr_skb", "ee.ee_errno", 4)?,
        flowi4_iif: at("flowi4", "__fl_common.flowic_iif", 4)?,
        flowi4_proto: at("flowi4", "__fl_common.flowic_proto", 1)?,
        flowi4_daddr: at("flowi4", "daddr", 4)?,
        flowi4_dport: at("flowi4", "uli.ports.dport", 2)?,
        flowi4_sport: at("flowi4", "uli.ports.sport", 2)?,
        flowi6_iif: at("flowi6", "__fl_common.flowic_iif", 4)?,
        flowi6_proto: at("flowi6", "__fl_common.flowic_proto", 1)?,
        flowi6_daddr: at("flowi6", "daddr", 16)?,
        flowi6_dport: at("flowi6", "uli.ports.dport", 2)?,
        flowi6_sport: at("flowi6", "uli.ports.sport", 2)?,
        fib6_result_f6i: at("fib6_result", "f6i", 8)?,
        fib6_result_type: at("fib6_result", "fib6_type", 1)?,
        fib6_table_id: at("fib6_table", "tb6_id", 4)?,
        task_group_leader: at("task_struct", "group_leader", 8)?,
        task_start_boottime: at("task_struct", "start_boottime", 8)?,
        task_cgroups: at("task_struct", "cgroups", 8)?,
        task_nsproxy: at("task_struct", "nsproxy", 8)?,
        task_files: at("task_struct", "files", 8)?,
        nsproxy_net: at("nsproxy", "net_ns", 8)?,
        css_set_memory,
        css_cgroup: at("cgroup_subsys_state", "cgroup", 8)?,
        cgroup_kn: at("cgroup", "kn", 8)?,
        kernfs_id: at("kernfs_node", "id", 8)?,
        files_fdt: at("files_struct", "fdt", 8)?,
        fdtable_fd: at("fdtable", "fd", 8)?,
        fdtable_max_fds: at("fdtable", "max_fds", 4)?,
        file_private_data: at("file", "private_data", 8)?,
        socket_type: at("socket", "type", 2)?,
        socket_sk: at("socket", "sk", 8)?,
        resolved: 1,
    })
}

/// A member's byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u32,
    pub size: usize,
}

/// The member at `path` (dot-separated members, anonymous structs and unions looked
/// through) inside `struct ty`.
pub fn member(btf: &Btf, ty: &str, path: &str) -> anyhow::Result<MemberInfo> {
    let mut current = struct_named(btf, ty)?;
    let mut bits = 0u32;
    let mut segments = path.split('.').peekable();
    loop {
        let name = segments
            .next()
            .ok_or_else(|| anyhow!("empty member path"))?;
        let (member_bits, member_ty) =
            find_member(btf, &current, name)?.ok_or_else(|| anyhow!("no member `{name}`"))?;
        bits += member_bits;
        let member_ty = peel(btf, member_ty)?;
        if segments.peek().is_none() {
            if !bits.is_multiple_of(8) {
                bail!("`{path}` is a bitfield");
            }
            return Ok(MemberInfo {
                offset: bits / 8,
                size: size_of(btf, &member_ty)?,
            });
        }
        current = match member_ty {
            Type::Struct(s) | Type::Union(s) => Type::Struct(s),
            other => bail!("`{name}` is a {}, not a struct", other.name()),
        };
    }
}

/// Byte offset of `path` inside `struct ty` (see [`member`]).
pub fn offset_of(btf: &Btf, ty: &str, path: &str) -> anyhow::Result<u32> {
    member(btf, ty, path).map(|m| m.offset)
}

/// The size of a (peeled) type in bytes.
fn size_of(btf: &Btf, ty: &Type) -> anyhow::Result<usize> {
    Ok(match ty {
        Type::Int(i) => i.size(),
        Type::Ptr(_) => 8,
        Type::Struct(s) | Type::Union(s) => s.size(),
        Type::Enum(e) => e.size(),
        Type::Enum64(e) => e.size(),
        Type::Array(a) => a.len() * size_of(btf, &peel(btf, btf.resolve_chained_type(a)?)?)?,
        other => bail!("cannot size a {}", other.name()),
    })
}

/// The definition (not a forward declaration) of `struct name`.
fn struct_named(btf: &Btf, name: &str) -> anyhow::Result<Type> {
    btf.resolve_types_by_name(name)
        .with_context(|| format!("no type named {name}"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(|| anyhow!("no struct {name}"))
}

/// A member's bit offset and type, looking inside anonymous structs and unions.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> anyhow::Result<Option<(u32, Type)>> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return Ok(None);
    };
    for member in &s.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_ty = btf.resolve_chained_type(member)?;
        if member_name == name {
            return Ok(Some((member.bit_offset(), member_ty)));
        }
        if member_name.is_empty()
            && let Some((inner, t)) = find_member(btf, &peel(btf, member_ty)?, name)?
        {
            return Ok(Some((member.bit_offset() + inner, t)));
        }
    }
    Ok(None)
}

/// Looks through typedefs and qualifiers to the type underneath.
fn peel(btf: &Btf, mut ty: Type) -> anyhow::Result<Type> {
    for _ in 0..16 {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) => btf.resolve_chained_type(t)?,
            Type::Volatile(t) => btf.resolve_chained_type(t)?,
            Type::Restrict(t) => btf.resolve_chained_type(t)?,
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
        ty = next;
    }
    bail!("type chain too long")
}

/// The members of `enum name` with their values (empty when the kernel has no such enum).
fn enum_members(btf: &Btf, name: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let Ok(types) = btf.resolve_types_by_name(name) else {
        return Ok(Vec::new());
    };
    let Some(Type::Enum(e)) = types.into_iter().find(|t| matches!(t, Type::Enum(_))) else {
        return Ok(Vec::new());
    };
    e.members
        .iter()
        .map(|m| Ok((btf.resolve_name(m)?, m.val())))
        .collect()
}

fn enum_value(btf: &Btf, ty: &str, member: &str) -> anyhow::Result<Option<u32>> {
    Ok(enum_members(btf, ty)?
        .into_iter()
        .find(|(n, _)| n == member)
        .map(|(_, v)| v))
}

/// How many arguments a tracepoint passes its raw programs (its `TP_PROTO`), from the
/// `btf_trace_<name>` typedef the kernel declares for it (whose first parameter is the
/// tracepoint's private data, not an argument).
fn tracepoint_args(btf: &Btf, name: &str) -> anyhow::Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let ty = btf
        .resolve_types_by_name(&typedef)
        .with_context(|| format!("no tracepoint {name} (no {typedef} in BTF)"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no tracepoint {name}"))?;
    let ty = peel(btf, ty)?;
    let Type::Ptr(ptr) = ty else {
        bail!("{typedef} is not a function pointer");
    };
    match btf.resolve_chained_type(&ptr)? {
        Type::FuncProto(proto) => Ok(proto.parameters.len().saturating_sub(1)),
        other => bail!("{typedef} points to a {}", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These read this machine's BTF, which every kernel we support has; a machine without
    // it cannot run conntrace at all, so the test says so rather than passing quietly.
    fn vmlinux() -> Btf {
        Btf::from_file(VMLINUX)
            .expect("kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)")
    }

    #[test]
    fn resolves_the_whole_layout_on_this_kernel() {
        let layout = resolve_layout(&vmlinux()).unwrap();
        let o = layout.offsets;
        assert_eq!(o.resolved, 1);
        assert!(o.sock_err > 0 && o.task_files > 0 && o.tcp_segs_out > 0);
        // socket.type follows the 4-byte socket_state.
        assert_eq!(o.socket_type, 4);
        assert_eq!(o.fdtable_max_fds, 0);
        // The inet_sock begins with its sock, so its members lie past the sock's.
        assert!(o.sock_sport > o.sock_dport);
        assert!(
            layout
                .drop_reasons
                .iter()
                .any(|(n, _)| *n == "NETFILTER_DROP")
        );
        assert!(layout.has_connect_function);
    }

    #[test]
    fn sizes_members_through_typedefs_arrays_and_pointers() {
        let btf = vmlinux();
        assert_eq!(
            member(&btf, "sock", "__sk_common.skc_v6_daddr")
                .unwrap()
                .size,
            16
        );
        assert_eq!(
            member(&btf, "sock", "__sk_common.skc_net.net")
                .unwrap()
                .size,
            8
        );
        assert_eq!(member(&btf, "sock", "sk_err").unwrap().size, 4);
        assert_eq!(
            member(&btf, "sock", "__sk_common.skc_state").unwrap().size,
            1
        );
        assert_eq!(member(&btf, "task_struct", "comm").unwrap().size, 16);
    }

    #[test]
    fn a_member_of_another_size_than_read_is_a_kernel_error() {
        let btf = vmlinux();
        // sk_err is an int: read as 8 bytes it would take the next field's bytes too.
        assert_eq!(member(&btf, "sock", "sk_err").unwrap().size, 4);
        let err = resolve_offsets_with(&btf, None, |ty, path| {
            (ty == "sock" && path == "sk_err").then_some(8)
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("struct sock.sk_err is 4 bytes, conntrace reads 8"),
            "{err}"
        );
    }

    #[test]
    fn looks_inside_nested_structs() {
        let btf = vmlinux();
        let common = offset_of(&btf, "sock", "__sk_common").unwrap();
        let state = offset_of(&btf, "sock_common", "skc_state").unwrap();
        assert_eq!(
            offset_of(&btf, "sock", "__sk_common.skc_state").unwrap(),
            common + state
        );
    }

    #[test]
    fn unknown_members_are_errors() {
        let err = offset_of(&vmlinux(), "sock", "no_such_member")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_member"), "{err}");
        assert!(offset_of(&vmlinux(), "no_such_struct_xyz", "a").is_err());
    }

    #[test]
    fn counts_tracepoint_arguments() {
        let btf = vmlinux();
        assert_eq!(tracepoint_args(&btf, "inet_sock_set_state").unwrap(), 3);
        assert_eq!(tracepoint_args(&btf, "tcp_receive_reset").unwrap(), 1);
        assert!(tracepoint_args(&btf, "no_such_tracepoint_xyz").is_err());
    }

    #[test]
    fn enum_values_come_from_the_kernel() {
        let btf = vmlinux();
        let members = enum_members(&btf, "skb_drop_reason").unwrap();
        assert!(
            members
                .iter()
                .any(|(n, _)| n == "SKB_DROP_REASON_NOT_SPECIFIED")
        );
        assert!(
            enum_value(&btf, "cgroup_subsys_id", "memory_cgrp_id")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            enum_value(&btf, "cgroup_subsys_id", "no_such_cgrp_id").unwrap(),
            None
        );
    }
}
