//! The run loop: drain the ring buffer in bounded batches, classify, enrich, write; flush
//! on a tick; stats on a tick and at exit; stop on SIGINT/SIGTERM, the duration, or a
//! closed stdout.
use std::{
    io::{ErrorKind, Write},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    classify::classify,
    decode::decode,
    enrich::ProcCache,
    exit::{StartError, Status},
    loader::{Programs, Tracer},
    model::{Action, ConnEvent, Outcome},
    output::{RunInfo, Sink},
    stats::{Counts, Snapshot},
};

/// Records handled before the loop yields to its other branches (signals, ticks), so that
/// a storm cannot starve them.
const BATCH: usize = 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// With `--wakeup-batch`, how often the ring buffer is read whatever the kernel says:
/// records below the batch threshold wait at most this long.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// What the collector does with each classified event, besides counting it.
pub trait Consumer {
    /// Called for every event; returns an I/O error from writing.
    fn event(&mut self, event: &ConnEvent) -> std::io::Result<()>;
    /// Called on the stats tick and at exit.
    fn stats(&mut self, snapshot: &Snapshot) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
    /// Called every [`Schedule::tick`] (summaries, a screen to redraw); `Flow::Stop` ends
    /// the run as SIGINT would.
    fn tick(&mut self) -> std::io::Result<Flow> {
        Ok(Flow::Continue)
    }
}

/// Whether the run goes on after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The `trace` consumer: prints what `--all` (or its absence) asks for.
pub struct TracePrinter<W: Write> {
    pub sink: Sink<W>,
    pub all: bool,
}

/// Whether `trace` prints an event: failures, resets, losses, and closes that carry
/// retransmits by default; everything with `--all`.
pub fn printed_by_default(e: &ConnEvent) -> bool {
    match e.action {
        Action::Connect => e.outcome == Outcome::Failure,
        Action::Close => e.retransmits > 0,
        Action::Reset | Action::Lost | Action::Retransmit => true,
    }
}

impl<W: Write> Consumer for TracePrinter<W> {
    fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        if self.all || printed_by_default(e) {
            self.sink.event(e)
        } else {
            Ok(())
        }
    }

    fn stats(&mut self, s: &Snapshot) -> std::io::Result<()> {
        self.sink.stats(s)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

/// Run settings that are not the consumer's business.
pub struct Schedule {
    pub duration: Option<Duration>,
    pub stats_interval: Option<Duration>,
    /// How often [`Consumer::tick`] is called; never when unset.
    pub tick: Option<Duration>,
}

/// Offset from the kernel's CLOCK_MONOTONIC (bpf_ktime_get_ns) to wall-clock time.
pub fn monotonic_to_unix_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a local timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Why the loop stopped.
enum Stop {
    Done,
    PipeClosed,
}

struct Collector {
    offset_ns: i128,
    counts: Counts,
    procs: ProcCache,
}

impl Collector {
    /// Handles one ring-buffer item.
    fn handle(&mut self, bytes: &[u8], consumer: &mut impl Consumer) -> std::io::Result<()> {
        let Ok(raw) = decode(bytes) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let Some(mut event) = classify(&raw, self.offset_ns) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        self.procs.enrich(&mut event.process);
        self.counts.record(&event);
        consumer.event(&event)
    }

    /// Handles at most `limit` items; returns how many there were.
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        limit: usize,
        consumer: &mut impl Consumer,
    ) -> std::io::Result<usize> {
        let mut n = 0;
        while n < limit {
            let Some(item) = ring.next() else { break };
            self.handle(&item, consumer)?;
            n += 1;
        }
        Ok(n)
    }

    fn snapshot(&self, programs: &Programs, is_final: bool) -> Snapshot {
        let kernel = programs.read_counters().unwrap_or_else(|e| {
            tracing::warn!("could not read kernel counters: {e:#}");
            Default::default()
        });
        Snapshot {
            time_ns: unix_now_ns(),
            counts: self.counts.clone(),
            kernel,
            is_final,
        }
    }
}

/// Runs until stopped; returns the exit status. Write errors other than a closed pipe are
/// output failures.
pub async fn run(
    tracer: Tracer,
    info: &RunInfo,
    schedule: &Schedule,
    with_args: bool,
    consumer: &mut (impl Consumer + Starter),
) -> anyhow::Result<Status> {
    let mut collector = Collector {
        offset_ns: monotonic_to_unix_ns(),
        counts: Counts::default(),
        procs: ProcCache::new(with_args),
    };
    match run_loop(tracer, info, schedule, &mut collector, consumer).await {
        Ok(Stop::Done | Stop::PipeClosed) => Ok(Status::Ok),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Status::Ok),
        Err(e) => Err(StartError::Output(format!("writing output failed: {e}")).into()),
    }
}

/// Writes the stream's first record (only trace-like consumers have one).
pub trait Starter {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()>;
}

impl<W: Write> Starter for TracePrinter<W> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        self.sink.start(info)
    }
}

async fn run_loop(
    tracer: Tracer,
    info: &RunInfo,
    schedule: &Schedule,
    collector: &mut Collector,
    consumer: &mut (impl Consumer + Starter),
) -> std::io::Result<Stop> {
    let Tracer {
        events,
        mut programs,
        held_back,
        ..
    } = tracer;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, until dropped,
    // and the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Only now: whoever waits for the start record may signal us as soon as it sees it.
    consumer.start(info)?;
    consumer.flush()?;
    let mut flush = interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stats_every = schedule
        .stats_interval
        .unwrap_or(Duration::from_secs(365 * 86_400));
    let mut stats = tokio::time::interval_at(Instant::now() + stats_every, stats_every);
    stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let tick_every = schedule.tick.unwrap_or(Duration::from_secs(365 * 86_400));
    let mut tick = tokio::time::interval_at(Instant::now() + tick_every, tick_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = schedule.duration.map(|d| Instant::now() + d);
    let mut poll = interval(POLL_EVERY);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let outcome: std::io::Result<()> = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let n = collector.drain(guard.get_inner_mut(), BATCH, consumer);
                match n {
                    Ok(n) if n < BATCH => guard.clear_ready(),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            }
            // Records submitted without a wake-up: read them on a timer, in bounded batches.
            _ = poll.tick(), if held_back => {
                if let Err(e) = drain_all(collector, ring.get_mut(), consumer).await {
                    break Err(e);
                }
            }
            _ = flush.tick() => {
                programs.flush_kernel_log();
                if let Err(e) = consumer.flush() { break Err(e) }
            }
            _ = stats.tick() => {
                let snap = collector.snapshot(&programs, false);
                if let Err(e) = consumer.stats(&snap) { break Err(e) }
            }
            _ = tick.tick() => match consumer.tick() {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            () = wait_until(deadline) => break Ok(()),
        }
    };
    match outcome {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(Stop::PipeClosed),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    // Whatever the kernel wrote before we stopped is still ours to report.
    let ring = ring.get_mut();
    while collector.drain(ring, BATCH, consumer)? == BATCH {}
    let snap = collector.snapshot(&programs, true);
    consumer.stats(&snap)?;
    consumer.flush()?;
    Ok(Stop::Done)
}

/// Drains what is in the ring buffer now, a batch at a time, yielding between batches.
async fn drain_all(
    collector: &mut Collector,
    ring: &mut RingBuf<MapData>,
    consumer: &mut impl Consumer,
) -> std::io::Result<()> {
    while collector.drain(ring, BATCH, consumer)? == BATCH {
        tokio::task::yield_now().await;
    }
    Ok(())
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
