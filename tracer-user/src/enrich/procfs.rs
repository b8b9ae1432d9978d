//! One process's details from procfs, and the check that they are the details of the
//! process the record is about: a pid outlives nothing. Between the connect and this
//! read, the process may have `exec`ed another program (same pid, same start time, new
//! name) or exited and had its pid reused (new start time). The record's start time (when
//! the kernel gave one) and task name are compared with `/proc/PID/stat` and the thread's
//! `comm` before and after the reads; on a mismatch nothing read is used.
use std::{fs::File, path::PathBuf, sync::OnceLock};

use super::args;
use crate::model::DetailsMissing;

/// What the record says about its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect<'a> {
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a str,
    /// CLOCK_BOOTTIME nanoseconds; 0 when the kernel did not record it.
    pub start_boottime_ns: u64,
}

/// The details read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    pub executable: Option<String>,
    pub args: Option<args::Args>,
    /// `/proc/PID/cgroup`, for the identity when the kernel's cgroup ids say nothing.
    pub cgroup: Option<String>,
}

/// `/proc/PID/stat`'s task name (field 2) and start time in clock ticks (field 22).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The name is in parentheses and may itself hold `)` and
/// spaces: the fields resume after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Field 3 (state) is the first after the name; field 22 is the 20th.
    let start_ticks = text
        .get(close + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    Some(Stat { comm, start_ticks })
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`, 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *TICKS.get_or_init(|| {
        u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .unwrap_or(100)
            .max(1)
    })
}

/// A CLOCK_BOOTTIME start time in `/proc/PID/stat`'s ticks, as the kernel converts it
/// (`nsec_to_clock_t`: rounded down).
pub fn boottime_to_ticks(ns: u64, ticks_per_second: u64) -> u64 {
    ns / (1_000_000_000 / ticks_per_second.max(1))
}

/// procfs, or a directory laid out like it (tests).
#[derive(Clone, Debug)]
pub struct Procfs {
    pub root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Procfs {
    fn path(&self, pid: u32, rest: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rest)
    }

    /// Read as bytes and decoded lossily, as the record's name is: a task may name itself
    /// with bytes that are not UTF-8, and is still there.
    fn stat(&self, pid: u32) -> Option<Stat> {
        parse_stat(&String::from_utf8_lossy(
            &std::fs::read(self.path(pid, "stat")).ok()?,
        ))
    }

    /// Whether the process now at `pid` is the one the record is about.
    fn verify(&self, want: &Expect<'_>) -> Result<Stat, DetailsMissing> {
        let stat = self.stat(want.pid).ok_or(DetailsMissing::Exited)?;
        if want.start_boottime_ns != 0
            && boottime_to_ticks(want.start_boottime_ns, clock_ticks()) != stat.start_ticks
        {
            return Err(DetailsMissing::Replaced);
        }
        // The connecting thread's own name when it still runs (threads name themselves),
        // else the process's: a thread gone with a name unlike its process's cannot be
        // vouched for.
        let thread_comm = std::fs::read(self.path(want.pid, &format!("task/{}/comm", want.tid)))
            .ok()
            .map(|b| String::from_utf8_lossy(b.strip_suffix(b"\n").unwrap_or(&b)).into_owned());
        if thread_comm.as_deref().unwrap_or(&stat.comm) != want.comm {
            return Err(DetailsMissing::Replaced);
        }
        Ok(stat)
    }

    /// Reads the details of the process the record is about, or says why not.
    pub fn read(&self, want: &Expect<'_>, with_args: bool) -> Result<Details, DetailsMissing> {
        let before = self.verify(want)?;
        let details = Details {
            executable: std::fs::read_link(self.path(want.pid, "exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            args: if with_args {
                File::open(self.path(want.pid, "cmdline"))
                    .and_then(args::read)
                    .ok()
                    .filter(|a| !a.args.is_empty())
            } else {
                None
            },
            cgroup: std::fs::read_to_string(self.path(want.pid, "cgroup")).ok(),
        };
        // An exec during the reads changes the name; then what was read may be the new
        // program's. A process that exited meanwhile was still itself when read.
        match self.stat(want.pid) {
            Some(after) if after != before => Err(DetailsMissing::Replaced),
            _ => Ok(details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake procfs with one process.
    pub struct FakeProc {
        pub dir: PathBuf,
    }

    impl FakeProc {
        pub fn new(tag: &str) -> FakeProc {
            let dir =
                std::env::temp_dir().join(format!("ct-fakeproc-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeProc { dir }
        }

        pub fn add(&self, pid: u32, comm: &str, start_ticks: u64, cmdline: &[u8]) {
            let p = self.dir.join(pid.to_string());
            std::fs::create_dir_all(p.join(format!("task/{pid}"))).unwrap();
            let stat = format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 1000 100 18446744073709551615\n"
            );
            std::fs::write(p.join("stat"), stat).unwrap();
            std::fs::write(p.join(format!("task/{pid}/comm")), format!("{comm}\n")).unwrap();
            std::fs::write(p.join("cmdline"), cmdline).unwrap();
            std::fs::write(p.join("cgroup"), "0::/init.scope\n").unwrap();
            let _ = std::os::unix::fs::symlink("/usr/bin/fake", p.join("exe"));
        }

        pub fn procfs(&self) -> Procfs {
            Procfs {
                root: self.dir.clone(),
            }
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn expect(pid: u32, comm: &str, start_ns: u64) -> Expect<'_> {
        Expect {
            pid,
            tid: pid,
            comm,
            start_boottime_ns: start_ns,
        }
    }

    #[test]
    fn stat_fields_after_a_hostile_name() {
        let text =
            "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                comm: "a) b) c".into(),
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn ticks_as_the_kernel_rounds() {
        assert_eq!(boottime_to_ticks(1_234_567_890, 100), 123);
        assert_eq!(boottime_to_ticks(9_999_999, 100), 0);
        assert_eq!(boottime_to_ticks(10_000_000, 100), 1);
    }

    #[test]
    fn the_same_process_gets_its_details() {
        let fake = FakeProc::new("same");
        fake.add(10, "curl", 500, b"curl\0http://h/\0");
        let got = fake
            .procfs()
            .read(&expect(10, "curl", 500 * 10_000_000 + 3), true)
            .unwrap();
        assert_eq!(got.executable.as_deref(), Some("/usr/bin/fake"));
        assert_eq!(got.args.unwrap().args, ["curl", "http://h/"]);
        assert_eq!(got.cgroup.as_deref(), Some("0::/init.scope\n"));
        // Without a start time, the name alone is checked.
        assert!(fake.procfs().read(&expect(10, "curl", 0), false).is_ok());
    }

    #[test]
    fn a_reused_pid_is_not_the_process() {
        let fake = FakeProc::new("reused");
        fake.add(11, "curl", 700, b"curl\0");
        assert_eq!(
            fake.procfs()
                .read(&expect(11, "curl", 500 * 10_000_000), true),
            Err(DetailsMissing::Replaced)
        );
    }

    #[test]
    fn an_execed_process_is_not_the_program_that_connected() {
        let fake = FakeProc::new("exec");
        fake.add(12, "sleep", 500, b"sleep\x00100\x00");
        assert_eq!(
            fake.procfs()
                .read(&expect(12, "curl", 500 * 10_000_000), true),
            Err(DetailsMissing::Replaced)
        );
    }

    #[test]
    fn a_named_thread_is_checked_by_its_own_name() {
        let fake = FakeProc::new("thread");
        fake.add(13, "java", 500, b"java\0-jar\0a.jar\0");
        let task = fake.dir.join("13/task/14");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("comm"), "pool-1-thread-1\n").unwrap();
        let want = Expect {
            pid: 13,
            tid: 14,
            comm: "pool-1-thread-1",
            start_boottime_ns: 0,
        };
        assert!(fake.procfs().read(&want, false).is_ok());
        // Gone, with a name unlike the process's: cannot be vouched for.
        let gone = Expect { tid: 15, ..want };
        assert_eq!(
            fake.procfs().read(&gone, false),
            Err(DetailsMissing::Replaced)
        );
    }

    /// A name that is not UTF-8 (and holds a newline) is compared as the record decodes
    /// it; the process was taken for exited when its stat was read as UTF-8.
    #[test]
    fn a_name_that_is_not_utf8_is_still_the_process() {
        let fake = FakeProc::new("bytes");
        fake.add(16, "x", 500, b"x\0");
        let raw: &[u8] = b"a\x1b[2J\r\n\xc2\x9b\x7f\xffz";
        let mut stat = b"16 (".to_vec();
        stat.extend_from_slice(raw);
        stat.extend_from_slice(
            b") S 1 16 16 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 500 1000 100 0\n",
        );
        std::fs::write(fake.dir.join("16/stat"), stat).unwrap();
        let mut comm = raw.to_vec();
        comm.push(b'\n');
        std::fs::write(fake.dir.join("16/task/16/comm"), comm).unwrap();
        let name = String::from_utf8_lossy(raw);
        let got = fake
            .procfs()
            .read(&expect(16, &name, 500 * 10_000_000), false)
            .unwrap();
        assert_eq!(got.executable.as_deref(), Some("/usr/bin/fake"));
    }

    #[test]
    fn an_exited_process() {
        let fake = FakeProc::new("exited");
        assert_eq!(
            fake.procfs().read(&expect(99, "x", 0), true),
            Err(DetailsMissing::Exited)
        );
    }

    #[test]
    fn this_process_on_the_real_procfs() {
        let me = std::process::id();
        let stat = Procfs::default().stat(me).unwrap();
        let got = Procfs::default()
            .read(
                &Expect {
                    pid: me,
                    tid: me,
                    comm: &stat.comm,
                    start_boottime_ns: stat.start_ticks * (1_000_000_000 / clock_ticks()),
                },
                true,
            )
            .unwrap();
        assert!(got.executable.is_some());
        assert!(!got.args.unwrap().args.is_empty());
    }
}
