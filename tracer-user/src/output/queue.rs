//! The bounded queue between the event loop, which formats records, and the writer thread,
//! which owns every blocking write. Records travel in chunks of about [`CHUNK_BYTES`]
//! that go back and forth between the two, so that steady work allocates nothing.
//!
//! The bound is in bytes. A connection record is admitted while less than the budget is
//! held (queued or being filled); past it, it is dropped and counted: a stalled reader
//! costs records, never the event loop's time. Other records (start, stats, summaries,
//! verdicts) are few and carry the counts that say what was lost, so they may use twice
//! the budget before they are dropped too (and counted apart).
use std::{
    collections::VecDeque,
    sync::{
        Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// The size a chunk is handed to the writer at. Each hand-off may wake the writer thread,
/// and a wake-up (two context switches) costs as much as formatting tens of records: at
/// 256 KiB, about 400 records share one.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Free chunks kept for reuse; more are released.
const FREE_KEPT: usize = 4;
/// Marks the end offset of a record that is not a connection record.
const OTHER: u32 = 1 << 31;

pub use crate::stats::Tally;

/// Records laid end to end, and where each one ends.
#[derive(Debug, Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// End offset of every record; [`OTHER`] marks the records that are not connection
    /// records. A record's bytes are `bytes[previous end..end]`.
    ends: Vec<u32>,
}

impl Chunk {
    fn with_capacity(bytes: usize) -> Chunk {
        Chunk {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(bytes / 256),
        }
    }

    /// Marks the bytes written since the previous record as one record.
    pub fn commit(&mut self, other: bool) {
        let end = u32::try_from(self.bytes.len()).unwrap_or(OTHER - 1) & !OTHER;
        self.ends.push(if other { end | OTHER } else { end });
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records whose last byte lies at or past `written`: not completely written.
    pub fn after(&self, written: usize) -> Tally {
        let mut t = Tally::default();
        for &end in self.ends.iter().rev() {
            if ((end & !OTHER) as usize) <= written {
                break;
            }
            if end & OTHER == 0 {
                t.events += 1;
            } else {
                t.other += 1;
            }
        }
        t
    }

    /// Where each record ends in `bytes`, in order: where a chunk may be cut.
    pub fn record_ends(&self) -> impl Iterator<Item = usize> + '_ {
        self.ends.iter().map(|&end| (end & !OTHER) as usize)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// What travels to the writer.
#[derive(Debug)]
pub enum Item {
    Chunk(Chunk),
    /// Reopen the output file (SIGHUP): after every record queued before it.
    Reopen,
}

/// How the writer thread ended.
#[derive(Debug)]
pub enum Ended {
    /// Everything queued was written.
    Drained,
    /// A write failed; nothing after it was written.
    Failed(std::io::Error),
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    free: Vec<Chunk>,
    /// No more items will come.
    closed: bool,
    /// Stop writing now: the writer returns from a write() interrupted by a signal
    /// instead of retrying it.
    abandon: bool,
    /// The writer sleeps on `work`: a hand-off must wake it (else it will look again
    /// before sleeping, and the wake-up's system call is saved).
    writer_waiting: bool,
    /// Records of the chunk being written that are not completely written yet.
    in_flight: Tally,
    /// Bytes of that chunk written so far.
    in_flight_written: usize,
    ended: Option<Ended>,
}

/// Shared by the producer ([`Producer`]) and the writer thread.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    /// Signalled when there is an item, or the queue closed.
    work: Condvar,
    /// Signalled when the writer ended.
    ended: Condvar,
    /// Bytes of queued chunks, readable without the lock on every record.
    queued_bytes: AtomicUsize,
    /// The writer ended (a failed write, or done).
    writer_ended: AtomicBool,
    /// Bytes written so far: whether a slow writer still makes progress.
    written_bytes: AtomicU64,
}

/// How long the writer may take at exit: as long as it makes progress, up to `max`; a
/// reader that takes nothing for `stall` is given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grace {
    pub stall: Duration,
    pub max: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            stall: Duration::from_secs(1),
            max: Duration::from_secs(5),
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    fn push(&self, item: Item) {
        let mut s = self.lock();
        if let Item::Chunk(c) = &item {
            self.queued_bytes
                .fetch_add(c.bytes.len(), Ordering::Relaxed);
        }
        s.items.push_back(item);
        let wake = s.writer_waiting;
        drop(s);
        if wake {
            self.work.notify_one();
        }
    }

    fn take_free(&self) -> Chunk {
        self.lock()
            .free
            .pop()
            .unwrap_or_else(|| Chunk::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4))
    }

    /// The writer's side: the next item, waiting for one; `None` once the queue is closed
    /// and empty, or abandoned.
    pub fn next(&self) -> Option<Item> {
        let mut s = self.lock();
        loop {
            if s.abandon {
                return None;
            }
            if let Some(item) = s.items.pop_front() {
                if let Item::Chunk(c) = &item {
                    s.in_flight = c.after(0);
                }
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s.writer_waiting = true;
            s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
            s.writer_waiting = false;
        }
    }

    /// The writer's side: `written` bytes of the chunk in flight are out.
    pub fn progress(&self, chunk: &Chunk, written: usize) {
        let mut s = self.lock();
        let before = s.in_flight_written;
        s.in_flight = chunk.after(written);
        s.in_flight_written = written;
        drop(s);
        self.written_bytes
            .fetch_add(written.saturating_sub(before) as u64, Ordering::Relaxed);
    }

    /// The writer's side: a chunk is written; it goes back to the free list.
    pub fn written(&self, mut chunk: Chunk) {
        self.queued_bytes
            .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
        let mut s = self.lock();
        self.written_bytes.fetch_add(
            chunk.bytes.len().saturating_sub(s.in_flight_written) as u64,
            Ordering::Relaxed,
        );
        s.in_flight = Tally::default();
        s.in_flight_written = 0;
        // A chunk that grew far past its size (a burst of summaries) is let go.
        if s.free.len() < FREE_KEPT && chunk.bytes.capacity() <= 4 * CHUNK_BYTES {
            chunk.clear();
            s.free.push(chunk);
        }
    }

    /// Whether the writer was told to give up.
    pub fn abandoned(&self) -> bool {
        self.lock().abandon
    }

    /// The writer's side: it stopped.
    pub fn end(&self, how: Ended) {
        let mut s = self.lock();
        s.ended = Some(how);
        self.writer_ended.store(true, Ordering::Release);
        drop(s);
        self.ended.notify_all();
    }

    /// A write error, once, for the event loop to act on.
    pub fn take_error(&self) -> Option<std::io::Error> {
        if !self.writer_ended.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.lock();
        match s.ended.take() {
            Some(Ended::Failed(e)) => Some(e),
            other => {
                s.ended = other;
                None
            }
        }
    }

    /// Closes the queue and waits until the writer has written everything, or stalled,
    /// or ran out of time (see [`Grace`]); whether it finished.
    pub fn close_and_wait(&self, grace: Grace) -> bool {
        let started = Instant::now();
        let mut last_progress = (started, self.written_bytes.load(Ordering::Relaxed));
        let mut s = self.lock();
        s.closed = true;
        self.work.notify_all();
        while s.ended.is_none() {
            let now = Instant::now();
            let written = self.written_bytes.load(Ordering::Relaxed);
            if written != last_progress.1 {
                last_progress = (now, written);
            }
            if now >= started + grace.max || now >= last_progress.0 + grace.stall {
                return false;
            }
            s = self
                .ended
                .wait_timeout(s, Duration::from_millis(20).min(grace.stall))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Tells the writer to give up; `interrupt` is called until it has (or `patience`
    /// passed), to wake it from a blocked write.
    pub fn abandon(&self, patience: Duration, mut interrupt: impl FnMut()) {
        let deadline = Instant::now() + patience;
        let mut s = self.lock();
        s.abandon = true;
        self.work.notify_all();
        while s.ended.is_none() && Instant::now() < deadline {
            drop(s);
            interrupt();
            s = self.lock();
            s = self
                .ended
                .wait_timeout(s, Duration::from_millis(10))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Records not completely written: the chunk in flight and everything still queued.
    pub fn unwritten(&self) -> Tally {
        let s = self.lock();
        let mut t = s.in_flight;
        for item in &s.items {
            if let Item::Chunk(c) = item {
                t.add(c.after(0));
            }
        }
        t
    }
}

/// The event loop's side: fills a chunk and hands it over when full (or on a flush).
#[derive(Debug)]
pub struct Producer {
    queue: std::sync::Arc<Queue>,
    chunk: Chunk,
    budget: usize,
    dropped: Tally,
}

impl Producer {
    pub fn new(queue: std::sync::Arc<Queue>, budget_bytes: usize) -> Producer {
        Producer {
            queue,
            chunk: Chunk::default(),
            budget: budget_bytes.max(CHUNK_BYTES),
            dropped: Tally::default(),
        }
    }

    /// Appends one record that `write` formats, or drops it (counted) when the queue
    /// holds too much. `other`: not a connection record. A formatting error leaves no
    /// partial record behind.
    pub fn record(
        &mut self,
        other: bool,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.chunk.bytes.len() >= CHUNK_BYTES {
            self.hand_off();
        }
        let held = self.queue.queued_bytes() + self.chunk.bytes.len();
        let limit = if other { 2 * self.budget } else { self.budget };
        if held >= limit {
            if other {
                self.dropped.other += 1;
            } else {
                self.dropped.events += 1;
            }
            return Ok(());
        }
        let start = self.chunk.bytes.len();
        if let Err(e) = write(&mut self.chunk.bytes) {
            self.chunk.bytes.truncate(start);
            return Err(e);
        }
        self.chunk.commit(other);
        Ok(())
    }

    /// Hands the records written so far to the writer.
    pub fn hand_off(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let next = self.queue.take_free();
        let full = std::mem::replace(&mut self.chunk, next);
        self.queue.push(Item::Chunk(full));
    }

    /// Asks the writer to reopen its file once it has written what came before.
    pub fn reopen(&mut self) {
        self.hand_off();
        self.queue.push(Item::Reopen);
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> Tally {
        self.dropped
    }

    pub fn queue(&self) -> &std::sync::Arc<Queue> {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) -> std::io::Result<()> {
        move |out| {
            out.extend(std::iter::repeat_n(b'x', n - 1));
            out.push(b'\n');
            Ok(())
        }
    }

    #[test]
    fn records_not_completely_written_are_counted_by_kind() {
        let mut c = Chunk::default();
        for (len, other) in [(10, false), (10, true), (10, false)] {
            c.bytes.extend(std::iter::repeat_n(b'x', len));
            c.commit(other);
        }
        assert_eq!(
            c.after(0),
            Tally {
                events: 2,
                other: 1
            }
        );
        assert_eq!(
            c.after(10),
            Tally {
                events: 1,
                other: 1
            }
        );
        assert_eq!(
            c.after(15),
            Tally {
                events: 1,
                other: 1
            },
            "a record cut in the middle is not written"
        );
        assert_eq!(c.after(30), Tally::default());
        assert_eq!(c.record_ends().collect::<Vec<_>>(), [10, 20, 30]);
    }

    #[test]
    fn a_full_queue_drops_connection_records_first() {
        let queue = Arc::new(Queue::default());
        let mut p = Producer::new(queue.clone(), CHUNK_BYTES);
        // Nobody writes: the budget (one chunk) fills up.
        let mut admitted = 0;
        for _ in 0..600 {
            p.record(false, line(1000)).unwrap();
            admitted += 1;
        }
        let dropped = p.dropped();
        assert!(dropped.events > 0 && dropped.other == 0, "{dropped:?}");
        assert!(
            queue.queued_bytes() + p.chunk.bytes.len() <= CHUNK_BYTES + 1000,
            "bounded"
        );
        // Other records still get in, up to twice the budget.
        p.record(true, line(100)).unwrap();
        assert_eq!(p.dropped().other, 0);
        p.hand_off();
        let queued = queue.unwritten();
        assert_eq!(
            queued.events + dropped.events,
            admitted,
            "every record is queued or counted"
        );
        assert_eq!(queued.other, 1);
    }

    #[test]
    fn a_formatting_error_leaves_nothing_behind() {
        let queue = Arc::new(Queue::default());
        let mut p = Producer::new(queue.clone(), CHUNK_BYTES);
        p.record(false, line(5)).unwrap();
        let err = p.record(false, |out| {
            out.extend_from_slice(b"half");
            Err(std::io::Error::other("no"))
        });
        assert!(err.is_err());
        p.hand_off();
        let Some(Item::Chunk(c)) = queue.next() else {
            panic!("a chunk")
        };
        assert_eq!(c.bytes, b"xxxx\n");
    }

    #[test]
    fn the_writer_sees_items_in_order_then_the_end() {
        let queue = Arc::new(Queue::default());
        let mut p = Producer::new(queue.clone(), CHUNK_BYTES);
        p.record(false, line(3)).unwrap();
        p.reopen();
        p.record(true, line(4)).unwrap();
        p.hand_off();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(item) = queue.next() {
                    match item {
                        Item::Chunk(c) => {
                            seen.push(c.bytes.len());
                            queue.written(c);
                        }
                        Item::Reopen => seen.push(0),
                    }
                }
                queue.end(Ended::Drained);
                seen
            })
        };
        assert!(queue.close_and_wait(Grace::default()));
        assert_eq!(writer.join().unwrap(), [3, 0, 4]);
        assert_eq!(queue.unwritten(), Tally::default());
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn a_stuck_writer_is_abandoned_and_what_it_held_is_counted() {
        let queue = Arc::new(Queue::default());
        let mut p = Producer::new(queue.clone(), CHUNK_BYTES);
        for _ in 0..3 {
            p.record(false, line(10)).unwrap();
        }
        p.hand_off();
        p.record(true, line(10)).unwrap();
        p.hand_off();
        // The writer takes the first chunk, writes 15 bytes of it, then hangs.
        let Some(Item::Chunk(c)) = queue.next() else {
            panic!("a chunk")
        };
        queue.progress(&c, 15);
        let started = Instant::now();
        let grace = Grace {
            stall: Duration::from_millis(20),
            max: Duration::from_secs(10),
        };
        assert!(!queue.close_and_wait(grace));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a stall ends the wait"
        );
        let mut interrupts = 0;
        queue.abandon(Duration::from_millis(30), || interrupts += 1);
        assert!(interrupts >= 1);
        assert!(queue.abandoned());
        assert_eq!(
            queue.unwritten(),
            Tally {
                events: 2,
                other: 1
            }
        );
    }
}
