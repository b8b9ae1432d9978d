//! Offsets into kernel structures, from the kernel's own BTF. Our eBPF programs are not
//! CO-RE relocated (aya's Rust programs cannot be yet), so the few fields they read
//! through pointers are located here and handed to them as a load-time global.
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use btf_rs::{Backend, Btf, Type};
use tracer_common::KernelOffsets;

use crate::exit::StartError;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Resolves every offset the eBPF programs need.
pub fn kernel_offsets(vmlinux: &Path) -> Result<KernelOffsets, StartError> {
    // Mmap: we look up a dozen types once; parsing all of vmlinux's BTF up front would
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
    resolve_all(&btf).map_err(|e| StartError::KernelUnsupported(format!("kernel BTF: {e:#}")))
}

fn resolve_all(btf: &Btf) -> anyhow::Result<KernelOffsets> {
    let at = |ty: &str, path: &str| {
        offset_of(btf, ty, path).with_context(|| format!("struct {ty}.{path}"))
    };
    Ok(KernelOffsets {
        sock_sk_err: at("sock", "sk_err")?,
        sock_net: at("sock", "__sk_common.skc_net.net")?,
        net_inum: at("net", "ns.inum")?,
        sock_protocol: at("sock", "sk_protocol")?,
        task_files: at("task_struct", "files")?,
        files_fdt: at("files_struct", "fdt")?,
        fdtable_fd: at("fdtable", "fd")?,
        fdtable_max_fds: at("fdtable", "max_fds")?,
        file_private_data: at("file", "private_data")?,
        socket_type: at("socket", "type")?,
        socket_sk: at("socket", "sk")?,
        sock_state: at("sock", "__sk_common.skc_state")?,
        resolved: 1,
        _pad: 0,
    })
}

/// Byte offset of `path` (dot-separated members, anonymous structs and unions looked
/// through) inside `struct ty`.
pub fn offset_of(btf: &Btf, ty: &str, path: &str) -> anyhow::Result<u32> {
    let mut current = struct_named(btf, ty)?;
    let mut bits = 0u32;
    let mut segments = path.split('.').peekable();
    while let Some(name) = segments.next() {
        let (member_bits, member_ty) =
            find_member(btf, &current, name)?.ok_or_else(|| anyhow!("no member `{name}`"))?;
        bits += member_bits;
        if segments.peek().is_some() {
            current = match peel(btf, member_ty)? {
                Type::Struct(s) | Type::Union(s) => Type::Struct(s),
                other => bail!("`{name}` is a {}, not a struct", other.name()),
            };
        }
    }
    if !bits.is_multiple_of(8) {
        bail!("`{path}` is a bitfield");
    }
    Ok(bits / 8)
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
    fn resolves_every_offset_on_this_kernel() {
        let offsets = resolve_all(&vmlinux()).unwrap();
        assert_eq!(offsets.resolved, 1);
        assert!(offsets.sock_sk_err > 0 && offsets.task_files > 0);
        // socket.type follows the 4-byte socket_state.
        assert_eq!(offsets.socket_type, 4);
        assert_eq!(offsets.fdtable_max_fds, 0);
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
}
