//! errno names, the way people search for them (`ECONNREFUSED`, not "Connection refused").

/// The symbolic name of a (positive) Linux errno, or `E<number>` for one we do not name.
pub fn name(errno: u32) -> String {
    known(errno).map_or_else(|| format!("E{errno}"), str::to_owned)
}

/// The errno for a symbolic name, the inverse of [`name`].
pub fn from_name(name: &str) -> Option<u32> {
    TABLE.iter().find(|(_, n)| *n == name).map(|(e, _)| *e)
}

/// The symbolic name of an errno we name; no allocation.
pub fn known(errno: u32) -> Option<&'static str> {
    TABLE.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

pub const EPERM: u32 = 1;
pub const EACCES: u32 = 13;
pub const ENETUNREACH: u32 = 101;
pub const ECONNRESET: u32 = 104;
pub const ETIMEDOUT: u32 = 110;
pub const ECONNREFUSED: u32 = 111;
pub const EHOSTUNREACH: u32 = 113;
pub const EADDRNOTAVAIL: u32 = 99;

// Those a connect or an established connection can end with, on Linux x86_64 and arm64.
const TABLE: &[(u32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (4, "EINTR"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (22, "EINVAL"),
    (24, "EMFILE"),
    (32, "EPIPE"),
    (64, "ENONET"),
    (71, "EPROTO"),
    (88, "ENOTSOCK"),
    (90, "EMSGSIZE"),
    (92, "ENOPROTOOPT"),
    (93, "EPROTONOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (97, "EAFNOSUPPORT"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (102, "ENETRESET"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (106, "EISCONN"),
    (107, "ENOTCONN"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
    (114, "EALREADY"),
    (115, "EINPROGRESS"),
    (125, "ECANCELED"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_common_connect_errors() {
        assert_eq!(name(ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(name(ETIMEDOUT), "ETIMEDOUT");
        assert_eq!(name(EADDRNOTAVAIL), "EADDRNOTAVAIL");
    }

    #[test]
    fn unknown_errno_keeps_its_number() {
        assert_eq!(name(4095), "E4095");
    }

    #[test]
    fn name_round_trips() {
        for (errno, n) in TABLE {
            assert_eq!(from_name(n), Some(*errno));
        }
    }
}
