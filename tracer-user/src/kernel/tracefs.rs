//! Tracepoint formats from tracefs (`events/<category>/<name>/format`): only the syscall
//! tracepoints of `--connect-hook syscalls` need them.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use tracer_common::SyscallOffsets;

use crate::exit::StartError;

/// Candidate tracefs mount points, in the order we look.
const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (we are root
/// by now; a container often has it unmounted).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, StartError> {
    if let Some(dir) = explicit {
        return if dir.join("events").is_dir() {
            Ok(dir.to_owned())
        } else {
            Err(StartError::KernelUnsupported(format!(
                "{}: not a tracefs mount (no events/ in it)",
                dir.display()
            )))
        };
    }
    if let Some(found) = MOUNTS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(found);
    }
    let target = PathBuf::from(MOUNTS[0]);
    if mount_tracefs(&target) && target.join("events").is_dir() {
        tracing::debug!("mounted tracefs at {}", target.display());
        return Ok(target);
    }
    Err(StartError::KernelUnsupported(
        "tracefs is not mounted and could not be mounted: run `mount -t tracefs tracefs /sys/kernel/tracing` \
         (kernel needs CONFIG_FTRACE / CONFIG_TRACEPOINTS)"
            .into(),
    ))
}

fn mount_tracefs(target: &Path) -> bool {
    let Ok(c_target) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        ) == 0
    }
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// The fields of a tracepoint, by name, parsed from its `format` file.
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    text.lines().filter_map(parse_field_line).collect()
}

/// `\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;` → ("skaddr", 8, 8).
fn parse_field_line(line: &str) -> Option<(String, Field)> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let (key, value) = part.trim().split_once(':')?;
        match key {
            "field" => decl = Some(value.trim()),
            "offset" => offset = value.trim().parse().ok(),
            "size" => size = value.trim().parse().ok(),
            _ => {}
        }
        if decl.is_some() && offset.is_some() && size.is_some() {
            break;
        }
    }
    // The name is the declaration's last word, less any array suffix: `__u8 saddr[4]`.
    let name = decl?
        .rsplit([' ', '*'])
        .next()?
        .split('[')
        .next()?
        .to_owned();
    Some((
        name,
        Field {
            offset: offset?,
            size: size?,
        },
    ))
}

/// A tracepoint's format, read from tracefs.
pub struct Format {
    tracepoint: String,
    fields: HashMap<String, Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Format, StartError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|e| {
            StartError::KernelUnsupported(format!(
                "tracepoint {category}:{name} is missing ({}: {e})",
                path.display()
            ))
        })?;
        Ok(Format {
            tracepoint: format!("{category}:{name}"),
            fields: parse_format(&text),
        })
    }

    /// Like [`Format::offset`], for a field that older kernels do not have.
    pub fn optional_offset(&self, field: &str, sizes: &[u16]) -> Result<Option<u16>, StartError> {
        if self.fields.contains_key(field) {
            self.offset(field, sizes).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The offset of `field`, checking its size is one we read it with.
    pub fn offset(&self, field: &str, sizes: &[u16]) -> Result<u16, StartError> {
        let f = self.fields.get(field).ok_or_else(|| {
            StartError::KernelUnsupported(format!(
                "tracepoint {} has no field `{field}`",
                self.tracepoint
            ))
        })?;
        if !sizes.contains(&f.size) {
            return Err(StartError::KernelUnsupported(format!(
                "tracepoint {} field `{field}` is {} bytes, expected {sizes:?}",
                self.tracepoint, f.size
            )));
        }
        Ok(f.offset)
    }
}

/// The syscall tracepoints' fields that `--connect-hook syscalls` reads. (Every other
/// program attaches to a raw tracepoint and reads its arguments, which need no tracefs.)
pub fn syscall_offsets(tracefs: &Path) -> Result<SyscallOffsets, StartError> {
    let enter = Format::read(tracefs, "syscalls", "sys_enter_connect")?;
    let exit = Format::read(tracefs, "syscalls", "sys_exit_connect")?;
    // Syscall arguments are stored as 8-byte slots.
    Ok(SyscallOffsets {
        enter_connect_fd: enter.offset("fd", &[8])?,
        enter_connect_uservaddr: enter.offset("uservaddr", &[8])?,
        exit_connect_ret: exit.offset("ret", &[8])?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixtures copied from the format files of Linux 6.18 and Debian's 6.1.
    const SET_STATE_6_18: &str = "name: inet_sock_set_state
ID: 1462
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s\"
";

    const SEND_RESET_6_18: &str = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
";

    #[test]
    fn parses_field_names_offsets_and_sizes() {
        let fields = parse_format(SET_STATE_6_18);
        assert_eq!(fields["skaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            fields["daddr_v6"],
            Field {
                offset: 56,
                size: 16
            }
        );
        assert_eq!(
            fields["saddr"],
            Field {
                offset: 32,
                size: 4
            }
        );
        assert_eq!(fields["common_pid"], Field { offset: 4, size: 4 });
        assert!(!fields.contains_key("print fmt"));
    }

    #[test]
    fn parses_enum_and_pointer_declarations() {
        let fields = parse_format(SEND_RESET_6_18);
        assert_eq!(
            fields["reason"],
            Field {
                offset: 28,
                size: 4
            }
        );
        assert_eq!(fields["skbaddr"], Field { offset: 8, size: 8 });
    }

    #[test]
    fn missing_field_and_wrong_size_are_kernel_errors() {
        let f = Format {
            tracepoint: "sock:x".into(),
            fields: parse_format(SET_STATE_6_18),
        };
        assert_eq!(f.offset("oldstate", &[4]).unwrap(), 16);
        let missing = f.offset("skbaddr", &[8]).unwrap_err().to_string();
        assert!(
            missing.contains("sock:x") && missing.contains("skbaddr"),
            "{missing}"
        );
        assert!(f.offset("oldstate", &[8]).is_err());
    }

    #[test]
    fn missing_tracepoint_names_it() {
        let dir = std::env::temp_dir().join(format!("conntrace-tracefs-{}", std::process::id()));
        let err = Format::read(&dir, "tcp", "tcp_nothing")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("tcp:tcp_nothing"), "{err}");
    }
}
