//! The writer thread: the one place where conntrace waits for its output. It takes chunks
//! from the queue and writes them to stdout or to a file (reopened on request, rotated by
//! size if asked). At exit it gets a bounded time to finish; a reader that never reads
//! again costs the records still queued (counted, exactly: the writer reports how far it
//! got), never the exit.
use std::{
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _, unix::thread::JoinHandleExt},
    path::{Path, PathBuf},
    sync::{Arc, Once},
    thread::JoinHandle,
    time::Duration,
};

use super::queue::{Chunk, Ended, Grace, Item, Producer, Queue, Tally};

/// How long abandoning a stuck writer may take: it is interrupted until it gives up.
const ABANDON_PATIENCE: Duration = Duration::from_millis(300);

/// Where the records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(FileOptions),
    Syslog(super::syslog::SyslogOptions),
}

/// `--output-file` and its rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOptions {
    pub path: PathBuf,
    /// Rotate once the file reaches this size (`--output-file-max-size`).
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`PATH.1` … `PATH.N`).
    pub keep: u32,
}

/// How the output ended at exit.
#[derive(Debug)]
pub enum Closed {
    /// Everything was written.
    Written,
    /// A write failed.
    Failed(io::Error),
    /// The reader did not take the rest within the grace time: these records were not
    /// (completely) written.
    Stalled { unwritten: Tally },
}

/// The writer thread and its queue.
#[derive(Debug)]
pub struct Writer {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

/// Opens the destination and starts the writer thread; the producer is the event loop's
/// end of the queue.
pub fn spawn(destination: &Destination, budget_bytes: usize) -> io::Result<(Producer, Writer)> {
    let target = Target::open(destination)?;
    install_interrupt_handler();
    let queue = Arc::new(Queue::default());
    let thread = {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name("conntrace-writer".into())
            .spawn(move || run(target, &queue))?
    };
    Ok((
        Producer::new(queue.clone(), budget_bytes),
        Writer {
            queue,
            thread: Some(thread),
        },
    ))
}

impl Writer {
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Lets the writer finish within `grace`; past it, interrupts and abandons it.
    pub fn close(&mut self, grace: Grace) -> Closed {
        if self.queue.close_and_wait(grace) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            return match self.queue.take_error() {
                Some(e) => Closed::Failed(e),
                None => Closed::Written,
            };
        }
        let thread = self.thread.as_ref().map(JoinHandleExt::as_pthread_t);
        self.queue.abandon(ABANDON_PATIENCE, || {
            if let Some(t) = thread {
                // SAFETY: the thread is alive (it has not ended) and the handler is a no-op;
                // the signal only interrupts its blocked write().
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGURG) };
            }
        });
        Closed::Stalled {
            unwritten: self.queue.unwritten(),
        }
    }
}

/// A no-op handler for SIGURG, installed without SA_RESTART, so that the signal makes a
/// blocked write() return. SIGURG is ignored by default, so a stray one changes nothing.
fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    extern "C" fn interrupted(_: libc::c_int) {}
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask; the handler
        // does nothing, so it is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = interrupted as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut());
        }
    });
}

/// The writer thread's body.
fn run(mut target: Target, queue: &Queue) {
    let how = loop {
        let Some(item) = queue.next() else {
            break Ended::Drained;
        };
        let result = match item {
            Item::Chunk(chunk) => {
                let r = match &mut target {
                    Target::Syslog(sender) => sender.send(&chunk, queue),
                    _ => write_rotating(&mut target, &chunk, queue),
                };
                if r.is_ok() {
                    queue.written(chunk);
                }
                r
            }
            Item::Reopen => {
                target.reopen();
                Ok(())
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => break Ended::Drained,
            Err(e) => break Ended::Failed(e),
        }
    };
    queue.end(how);
}

/// Writes a chunk; a file with a size limit is rotated after the record that reaches it,
/// so that a file exceeds the limit by less than one record.
fn write_rotating(target: &mut Target, chunk: &Chunk, queue: &Queue) -> io::Result<()> {
    let mut from = 0;
    for cut in target.cuts(chunk) {
        write_range(target.fd(), chunk, from, cut, queue)?;
        target.wrote((cut - from) as u64);
        from = cut;
    }
    write_range(target.fd(), chunk, from, chunk.bytes.len(), queue)?;
    target.wrote((chunk.bytes.len() - from) as u64);
    Ok(())
}

/// Writes `chunk.bytes[from..to]`, reporting progress after every write() so that an
/// abandoned writer's count of unwritten records is exact. `Interrupted` means abandoned.
fn write_range(fd: i32, chunk: &Chunk, from: usize, to: usize, queue: &Queue) -> io::Result<()> {
    let bytes = &chunk.bytes[..to];
    let mut written = from;
    while written < bytes.len() {
        let rest = &bytes[written..];
        // SAFETY: a valid buffer of `rest.len()` bytes; the fd is owned by the target.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                if written < bytes.len() {
                    queue.progress(chunk, written);
                }
            }
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted || queue.abandoned() {
                    if err.kind() == io::ErrorKind::Interrupted {
                        queue.progress(chunk, written);
                    }
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// The open destination.
enum Target {
    Stdout,
    File {
        options: FileOptions,
        file: File,
        size: u64,
    },
    Syslog(super::syslog::Sender),
}

impl Target {
    fn open(destination: &Destination) -> io::Result<Target> {
        Ok(match destination {
            Destination::Stdout => Target::Stdout,
            Destination::Syslog(options) => {
                Target::Syslog(super::syslog::Sender::connect(options).map_err(|e| {
                    io::Error::new(e.kind(), format!("syslog at {}: {e}", options.address))
                })?)
            }
            Destination::File(options) => {
                let file = open_append(&options.path)?;
                let size = file.metadata()?.len();
                Target::File {
                    options: options.clone(),
                    file,
                    size,
                }
            }
        })
    }

    fn fd(&self) -> i32 {
        match self {
            Target::Stdout | Target::Syslog(_) => libc::STDOUT_FILENO,
            Target::File { file, .. } => file.as_raw_fd(),
        }
    }

    /// Opens the file again (logrotate moved it). On failure the old file is kept, so
    /// that no record is lost for want of a directory.
    fn reopen(&mut self) {
        let Target::File {
            options,
            file,
            size,
        } = self
        else {
            return;
        };
        match open_append(&options.path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, f)) => {
                *file = f;
                *size = len;
                tracing::debug!("reopened {}", options.path.display());
            }
            Err(e) => tracing::warn!(
                "could not reopen {}: {e}; still writing to the file opened before",
                options.path.display()
            ),
        }
    }

    /// Where to cut a chunk so that each piece ends on the record that fills the file.
    fn cuts(&self, chunk: &Chunk) -> Vec<usize> {
        let Target::File {
            options:
                FileOptions {
                    max_bytes: Some(max),
                    ..
                },
            size,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut cuts = Vec::new();
        let (mut size, mut from) = (*size, 0);
        for end in chunk.record_ends() {
            if size + (end - from) as u64 >= *max && end < chunk.bytes.len() {
                cuts.push(end);
                size = 0;
                from = end;
            }
        }
        cuts
    }

    /// Counts what was written, and rotates the file once it reached its size.
    fn wrote(&mut self, len: u64) {
        let Target::File { options, size, .. } = self else {
            return;
        };
        *size += len;
        if options.max_bytes.is_some_and(|max| *size >= max) {
            if let Err(e) = rotate(&options.path, options.keep) {
                tracing::warn!("could not rotate {}: {e}", options.path.display());
                return;
            }
            self.reopen();
        }
    }
}

/// Opened for appending, so that `copytruncate` rotation and other writers are safe,
/// readable by owner and group only (the records name processes and their arguments).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// `PATH.N-1` → `PATH.N`, …, `PATH` → `PATH.1`; the oldest beyond `keep` is removed.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("conntrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines(p: &mut Producer, n: usize, len: usize) {
        for _ in 0..n {
            p.record(false, |out| {
                out.extend(std::iter::repeat_n(b'r', len - 1));
                out.push(b'\n');
                Ok(())
            })
            .unwrap();
        }
        p.hand_off();
    }

    #[test]
    fn writes_to_a_file_and_reopens_it_where_it_was_moved() {
        let dir = temp_dir("reopen");
        let path = dir.join("out.json");
        let dest = Destination::File(FileOptions {
            path: path.clone(),
            max_bytes: None,
            keep: 0,
        });
        let (mut p, mut w) = spawn(&dest, 1 << 20).unwrap();
        lines(&mut p, 2, 10);
        // What logrotate does: move the file, then signal.
        std::thread::sleep(Duration::from_millis(50));
        std::fs::rename(&path, dir.join("out.json.1")).unwrap();
        lines(&mut p, 1, 10);
        p.reopen();
        lines(&mut p, 3, 10);
        assert!(matches!(w.close(Grace::default()), Closed::Written));
        assert_eq!(std::fs::read(dir.join("out.json.1")).unwrap().len(), 30);
        assert_eq!(std::fs::read(&path).unwrap().len(), 30);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotates_by_size_keeping_n_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("out.json");
        let dest = Destination::File(FileOptions {
            path: path.clone(),
            max_bytes: Some(100),
            keep: 2,
        });
        let (mut p, mut w) = spawn(&dest, 1 << 20).unwrap();
        for _ in 0..4 {
            lines(&mut p, 10, 10);
        }
        lines(&mut p, 1, 10);
        assert!(matches!(w.close(Grace::default()), Closed::Written));
        let size = |n: &str| std::fs::metadata(dir.join(n)).map(|m| m.len()).ok();
        assert_eq!(size("out.json"), Some(10));
        assert_eq!(size("out.json.1"), Some(100));
        assert_eq!(size("out.json.2"), Some(100));
        assert_eq!(size("out.json.3"), None, "only two are kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_that_never_reads_is_abandoned_with_an_exact_count() {
        let mut fds = [0; 2];
        // SAFETY: a valid array for pipe2's two fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let [read_end, write_end] = fds;
        // SAFETY: both fds were just created and are owned here.
        let reader = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(read_end) };
        // SAFETY: idem.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(write_end) };
        let target = Target::File {
            options: FileOptions {
                path: "/nonexistent".into(),
                max_bytes: None,
                keep: 0,
            },
            file,
            size: 0,
        };
        install_interrupt_handler();
        let queue = Arc::new(Queue::default());
        let thread = {
            let queue = queue.clone();
            std::thread::spawn(move || run(target, &queue))
        };
        let mut w = Writer {
            queue: queue.clone(),
            thread: Some(thread),
        };
        let mut p = Producer::new(queue, 8 << 20);
        // 100 records of 1000 bytes: the pipe (64 KiB) takes 65 and some.
        lines(&mut p, 100, 1000);
        let grace = Grace {
            stall: Duration::from_millis(200),
            max: Duration::from_secs(10),
        };
        let Closed::Stalled { unwritten } = w.close(grace) else {
            panic!("the pipe is full: the writer cannot finish")
        };
        let mut in_pipe = Vec::new();
        drop(p);
        // SAFETY: make the read end non-blocking to take what is there.
        unsafe { libc::fcntl(read_end, libc::F_SETFL, libc::O_NONBLOCK) };
        let _ = std::io::Read::read_to_end(&mut &reader, &mut in_pipe);
        let complete = in_pipe.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(complete + unwritten.events, 100, "{unwritten:?}");
    }
}
