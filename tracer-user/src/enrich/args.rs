//! A process's arguments from `/proc/PID/cmdline`: read as bytes, decoded lossily (one bad
//! byte costs one replacement character, not the whole list), empty arguments kept,
//! secrets redacted (`redact`), and bounded: whatever the process holds (a megabyte of
//! arguments is legal), conntrace keeps at most [`ARG_BYTES`] per argument and
//! [`PROCESS_BYTES`] per process, reads at most [`SCAN_BYTES`], and says when it cut.
use std::io::{BufRead, BufReader, Read};

use super::redact::redact;

/// Bytes kept of one argument.
pub const ARG_BYTES: usize = 1024;
/// Bytes kept of all arguments together (an empty argument counts as one).
pub const PROCESS_BYTES: usize = 4096;
/// Bytes read past an argument's kept part, so that the redaction sees a secret's
/// context even where the argument is cut.
const LOOKAHEAD: usize = 1024;
/// Bytes of cmdline read at most (past them, the arguments are cut; a lookup of a
/// process holding megabytes of arguments costs no more than this).
pub const SCAN_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub args: Vec<String>,
    /// Some argument was cut, or some left out.
    pub truncated: bool,
}

/// An argument as read: its first bytes, and whether there were more.
struct Seen {
    bytes: Vec<u8>,
    cut: bool,
}

/// Reads a cmdline (NUL-terminated arguments; a process that rewrote its title may end
/// without the NUL).
pub fn read(from: impl Read) -> std::io::Result<Args> {
    let (seen, mut truncated) = read_seen(from)?;
    let cut: Vec<bool> = seen.iter().map(|s| s.cut).collect();
    let mut args: Vec<String> = seen
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.bytes).into_owned())
        .collect();
    redact(&mut args, &cut);
    let mut budget = PROCESS_BYTES;
    let mut kept = Vec::with_capacity(args.len());
    for (mut arg, was_cut) in args.into_iter().zip(cut) {
        if budget == 0 {
            truncated = true;
            break;
        }
        let limit = ARG_BYTES.min(budget);
        if arg.len() > limit {
            arg.truncate(floor_char_boundary(&arg, limit));
            truncated = true;
        }
        truncated |= was_cut;
        budget = budget.saturating_sub(arg.len().max(1));
        kept.push(arg);
    }
    Ok(Args {
        args: kept,
        truncated,
    })
}

/// The arguments' first bytes, stopping once the budget is spent or [`SCAN_BYTES`] read;
/// `true` when something was left unread.
fn read_seen(from: impl Read) -> std::io::Result<(Vec<Seen>, bool)> {
    let mut reader = BufReader::with_capacity(8192, from.take(SCAN_BYTES as u64 + 1));
    let mut seen = Vec::new();
    let mut cost = 0;
    let mut scanned = 0;
    loop {
        if cost >= PROCESS_BYTES || scanned > SCAN_BYTES {
            return Ok((seen, !reader.fill_buf()?.is_empty() || scanned > SCAN_BYTES));
        }
        let mut arg = Seen {
            bytes: Vec::new(),
            cut: false,
        };
        let mut terminated = false;
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            // Through CStr: the standard library's optimised memchr.
            let nul = std::ffi::CStr::from_bytes_until_nul(buf)
                .ok()
                .map(|c| c.to_bytes().len());
            let len = nul.unwrap_or(buf.len());
            let room = (ARG_BYTES + LOOKAHEAD).saturating_sub(arg.bytes.len());
            arg.bytes.extend_from_slice(&buf[..len.min(room)]);
            arg.cut |= len > room;
            let used = len + usize::from(nul.is_some());
            reader.consume(used);
            scanned += used;
            if nul.is_some() {
                terminated = true;
                break;
            }
        }
        if !terminated && arg.bytes.is_empty() {
            return Ok((seen, scanned > SCAN_BYTES));
        }
        // The read stopped inside this argument.
        arg.cut |= !terminated && scanned > SCAN_BYTES;
        cost += arg.bytes.len().clamp(1, ARG_BYTES);
        seen.push(arg);
    }
}

/// The largest index ≤ `i` on a character boundary.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    (0..=i.min(s.len()))
        .rev()
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Args {
        read(bytes).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn plain_arguments() {
        assert_eq!(
            parse(b"curl\0-sS\0http://10.0.0.2/\0"),
            Args {
                args: strings(&["curl", "-sS", "http://10.0.0.2/"]),
                truncated: false
            }
        );
        assert_eq!(parse(b"").args, Vec::<String>::new());
    }

    #[test]
    fn empty_arguments_are_kept() {
        assert_eq!(
            parse(b"prog\0\0x\0\0").args,
            strings(&["prog", "", "x", ""])
        );
        assert_eq!(parse(b"\0").args, strings(&[""]));
    }

    #[test]
    fn a_rewritten_title_without_its_nul() {
        assert_eq!(
            parse(b"nginx: worker process").args,
            strings(&["nginx: worker process"])
        );
    }

    #[test]
    fn bad_bytes_cost_one_character_not_the_list() {
        assert_eq!(
            parse(b"app\0caf\xe9\0ok\0").args,
            strings(&["app", "caf\u{fffd}", "ok"])
        );
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            parse(b"mysql\0-pSECRET\0--password=x\0").args,
            strings(&["mysql", "-pREDACTED", "--password=REDACTED"])
        );
    }

    #[test]
    fn long_arguments_are_cut_and_flagged() {
        let mut cmdline = b"app\0".to_vec();
        cmdline.extend(std::iter::repeat_n(b'a', 10_000));
        cmdline.extend(b"\0tail\0");
        let got = parse(&cmdline);
        assert!(got.truncated);
        assert_eq!(got.args.len(), 3);
        assert_eq!(got.args[1].len(), ARG_BYTES);
        assert_eq!(got.args[2], "tail");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut cmdline = b"app\0".to_vec();
        cmdline.push(b'x');
        for _ in 0..ARG_BYTES {
            cmdline.extend("é".as_bytes());
        }
        cmdline.push(0);
        let got = parse(&cmdline);
        assert!(got.truncated);
        assert!(got.args[1].len() <= ARG_BYTES);
        assert!(got.args[1].ends_with('é'));
    }

    #[test]
    fn the_process_budget_holds_for_a_megabyte() {
        // Eight arguments of 128 KiB (the kernel's limit for one), as a test of the bound.
        let mut cmdline = Vec::new();
        for n in 0..8u8 {
            cmdline.extend(std::iter::repeat_n(b'a' + n, 128 * 1024));
            cmdline.push(0);
        }
        let got = parse(&cmdline);
        assert!(got.truncated);
        let bytes: usize = got.args.iter().map(|a| a.len().max(1)).sum();
        assert!(bytes <= PROCESS_BYTES, "{bytes}");
        assert!(got.args.len() <= 4, "{}", got.args.len());
        assert_eq!(got.args[0].len(), ARG_BYTES);
        assert!(got.args[0].bytes().all(|b| b == b'a'));
        // Many empty arguments are bounded too.
        let many = vec![0u8; 100_000];
        let got = parse(&many);
        assert!(got.truncated);
        assert!(got.args.len() <= PROCESS_BYTES);
    }

    #[test]
    fn a_secret_cut_by_the_bound_is_still_hidden() {
        // The URL's `@` lies past what is read: the authority is hidden whole.
        let mut cmdline = b"git\0clone\0https://user:".to_vec();
        cmdline.extend(std::iter::repeat_n(b'p', 20_000));
        cmdline.extend(b"\0https://r@host/x\0");
        let got = parse(&cmdline);
        assert_eq!(got.args[..2], strings(&["git", "clone"]));
        assert_eq!(got.args[2], "https://REDACTED");
        assert!(got.truncated);
    }

    #[test]
    fn exactly_at_the_budget_is_not_truncated() {
        let arg = "b".repeat(ARG_BYTES);
        let cmdline = format!("{arg}\0{arg}\0{arg}\0{arg}\0");
        let got = parse(cmdline.as_bytes());
        assert_eq!(got.args.len(), 4);
        assert!(!got.truncated);
    }
}
