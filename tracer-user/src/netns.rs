//! Network namespace files (`/run/netns/NAME`, `/proc/PID/ns/net`): opened, checked to be
//! a network namespace, and named by their inode. A path names a namespace only at the
//! moment it is opened (a pid can be reused, a bind mount replaced), so every check is made
//! on the opened file, never on the path again.
use std::{
    fs::File,
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

/// Why a file is not the network namespace wanted.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a namespace file")]
    NotANamespace,
    #[error("a namespace, but not a network namespace")]
    OtherKind,
    /// The file names another namespace than the one expected: what its name referred to
    /// changed since it was listed (a process exited and its pid was reused).
    #[error("names network namespace {found}, not {expected} as expected")]
    Changed { expected: u64, found: u64 },
}

impl NetnsError {
    /// The system error behind it, if any (to tell a missing privilege apart).
    pub fn os_error(&self) -> Option<i32> {
        match self {
            NetnsError::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// An open network namespace file and the namespace's inode number.
#[derive(Debug)]
pub struct Netns {
    pub file: File,
    pub inode: u64,
}

impl Netns {
    /// Opens `path` and checks that it is a network namespace: the file lives on nsfs and
    /// the kernel says its type is CLONE_NEWNET.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        Netns::check(File::open(path)?)
    }

    /// Opens `path` and checks that it names the namespace `inode`.
    pub fn open_expected(path: &Path, inode: u64) -> Result<Netns, NetnsError> {
        let ns = Netns::open(path)?;
        ns.expect(inode)
    }

    /// Checks an open file: a namespace file, of a network namespace.
    pub fn check(file: File) -> Result<Netns, NetnsError> {
        let fd = file.as_raw_fd();
        let mut fs = MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: a valid fd and a buffer of the right type for the kernel to fill.
        if unsafe { libc::fstatfs(fd, fs.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fstatfs succeeded, so the buffer is filled.
        let fs = unsafe { fs.assume_init() };
        // The magic's C types differ between libcs; both are the 32-bit value 0x6e736673.
        #[allow(clippy::unnecessary_cast)]
        if fs.f_type as u64 != libc::NSFS_MAGIC as u64 {
            return Err(NetnsError::NotANamespace);
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let kind = unsafe { libc::ioctl(fd, libc::NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::OtherKind);
        }
        let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
        Ok(Netns { file, inode })
    }

    /// `self`, if it is the namespace `inode`.
    pub fn expect(self, inode: u64) -> Result<Netns, NetnsError> {
        if self.inode == inode {
            Ok(self)
        } else {
            Err(NetnsError::Changed {
                expected: inode,
                found: self.inode,
            })
        }
    }

    /// Moves the calling thread into this namespace (needs CAP_SYS_ADMIN).
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: a valid open namespace fd; CLONE_NEWNET changes only this thread's
        // network namespace.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Opens `rel` under the directory `dir` (a `/proc/PID` directory kept open, so that the
/// file is that process's even if the pid has been reused since: the kernel then answers
/// ENOENT or ESRCH instead).
pub fn open_at(dir: &File, rel: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: a valid directory fd and a NUL-terminated relative path.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            rel.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_inode() -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/net").unwrap())
    }

    #[test]
    fn our_own_namespace_opens_with_its_inode() {
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(ns.inode, own_inode());
        assert!(Netns::open_expected(Path::new("/proc/self/ns/net"), own_inode()).is_ok());
    }

    #[test]
    fn an_ordinary_file_is_not_a_namespace() {
        assert!(matches!(
            Netns::open(Path::new("/etc/passwd")),
            Err(NetnsError::NotANamespace)
        ));
        assert!(matches!(
            Netns::open(Path::new("/proc/self/stat")),
            Err(NetnsError::NotANamespace)
        ));
    }

    #[test]
    fn another_kind_of_namespace_is_refused() {
        for other in [
            "/proc/self/ns/mnt",
            "/proc/self/ns/uts",
            "/proc/self/ns/pid",
        ] {
            assert!(
                matches!(Netns::open(Path::new(other)), Err(NetnsError::OtherKind)),
                "{other}"
            );
        }
    }

    /// What a reused pid would do: the file opens, but names another namespace.
    #[test]
    fn an_unexpected_inode_is_refused() {
        let err =
            Netns::open_expected(Path::new("/proc/self/ns/net"), own_inode() + 1).unwrap_err();
        assert!(
            matches!(err, NetnsError::Changed { found, .. } if found == own_inode()),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_keeps_its_errno() {
        let err = Netns::open(Path::new("/no/such/netns")).unwrap_err();
        assert_eq!(err.os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn open_at_reads_under_a_kept_directory() {
        let dir = File::open("/proc/self").unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut open_at(&dir, c"comm").unwrap(), &mut text).unwrap();
        assert!(!text.is_empty());
        assert_eq!(
            open_at(&dir, c"no-such-file").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
    }
}
