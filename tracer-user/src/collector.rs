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
    enrich::{self, Enricher},
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
    kernel: crate::classify::Context,
    counts: Counts,
    procs: Enricher,
}

impl Collector {
    /// Handles one ring-buffer item.
    fn handle(&mut self, bytes: &[u8], consumer: &mut impl Consumer) -> std::io::Result<()> {
        let Ok(raw) = decode(bytes) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let Some(mut event) = classify(&raw, &self.kernel) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        self.procs.enrich(&mut event.process);
        if !self.procs.wanted(&event.process) {
            self.counts.filtered += 1;
            return Ok(());
        }
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
        let mut counts = self.counts.clone();
        counts.enrich = self.procs.counts();
        Snapshot {
            time_ns: unix_now_ns(),
            counts,
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
    enrich: enrich::Settings,
    consumer: &mut (impl Consumer + Starter),
) -> anyhow::Result<Status> {
    let mut collector = Collector {
        kernel: crate::classify::Context {
            boot_to_unix_ns: monotonic_to_unix_ns(),
            drop_reasons: tracer.drop_reasons.clone(),
            ns_per_jiffy: tracer.ns_per_jiffy,
        },
        counts: Counts::default(),
        procs: Enricher::new(enrich),
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
        rings,
        mut programs,
        held_back,
        ..
    } = tracer;
    let mut rings = rings
        .into_iter()
        // SAFETY: a ring buffer owns its map fd and keeps it open, unchanged, until
        // dropped, and the AsyncFd owns the ring buffer.
        .map(|ring| {
            unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        })
        .collect::<Result<Vec<_>, _>>()?;
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
            drained = drain_a_ready_ring(&mut rings, collector, consumer) => {
                if let Err(e) = drained { break Err(e) }
            }
            // Records submitted without a wake-up: read them on a timer, in bounded batches.
            _ = poll.tick(), if held_back => {
                if let Err(e) = drain_all(collector, &mut rings, consumer).await {
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
    for ring in &mut rings {
        while collector.drain(ring.get_mut(), BATCH, consumer)? == BATCH {}
    }
    let snap = collector.snapshot(&programs, true);
    consumer.stats(&snap)?;
    consumer.flush()?;
    Ok(Stop::Done)
}

/// Drains what is in the ring buffers now, a batch at a time, yielding between batches.
async fn drain_all(
    collector: &mut Collector,
    rings: &mut [AsyncFd<RingBuf<MapData>>],
    consumer: &mut impl Consumer,
) -> std::io::Result<()> {
    for ring in rings {
        while collector.drain(ring.get_mut(), BATCH, consumer)? == BATCH {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Waits until a ring buffer has records, and handles a batch of them. Its readiness is
/// kept while records remain, so that the next call comes back to it at once.
async fn drain_a_ready_ring(
    rings: &mut [AsyncFd<RingBuf<MapData>>],
    collector: &mut Collector,
    consumer: &mut impl Consumer,
) -> std::io::Result<()> {
    std::future::poll_fn(|cx| {
        for ring in rings.iter_mut() {
            if let std::task::Poll::Ready(guard) = ring.poll_read_ready_mut(cx) {
                let mut guard = guard?;
                let n = collector.drain(guard.get_inner_mut(), BATCH, consumer)?;
                if n < BATCH {
                    guard.clear_ready();
                }
                return std::task::Poll::Ready(Ok(()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
