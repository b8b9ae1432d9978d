//! The reader and the run loop. The reader drains the ring buffer in bounded batches and
//! turns each item into a [`ConnEvent`] (decode, classify, enrich) for the [`Sink`]; the
//! loop yields after every batch, so that signals, `--duration`, stats and the sinks'
//! ticks are served within a batch's time however hard the kernel pushes. Nothing here
//! blocks on output: sinks hand their records to a writer thread.
//!
//! Stopping: SIGINT, SIGTERM, SIGHUP (unless it reopens an output file), `--duration`, a
//! sink's tick (`top`'s `q`), or a closed stdout. The records the kernel wrote before the
//! stop are read, not those it writes after; then the final stats, and a bounded wait for
//! the writer. From the stop on, a second signal ends the process at once.
use std::{io::ErrorKind, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior, interval, interval_at, sleep_until},
};

use crate::{
    classify::classify,
    clock::{monotonic_now_ns, monotonic_to_unix_ns, unix_now_ns},
    decode::decode,
    enrich::{self, Enricher},
    exit::{StartError, Status},
    loader::{Programs, Tracer},
    model::RunInfo,
    sinks::{Flow, Sink},
    stats::{Counts, Snapshot},
};

/// Records handled before the loop yields to its other branches (signals, ticks), so that
/// a storm cannot starve them.
const BATCH: usize = 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// With `--wakeup-batch`, how often the ring buffer is read whatever the kernel says:
/// records below the batch threshold wait at most this long.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Long enough to stand for "never" in an interval.
const NEVER: Duration = Duration::from_secs(365 * 86_400);

/// Run settings that are not the sinks' business.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pub duration: Option<Duration>,
    pub stats_interval: Option<Duration>,
    /// The most records the ring buffer can hold: the final drain reads no more.
    pub ring_capacity: usize,
}

/// Decode, classify, enrich: one ring-buffer item into one record for the sink. One
/// reader serves every ring; what comes after it (the sink) does not know how many there
/// are.
struct Reader {
    kernel: crate::classify::Context,
    counts: Counts,
    procs: Enricher,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default)]
struct Batch {
    items: usize,
    /// A record stamped after the stop moment was met (final drain only).
    past_stop: bool,
}

impl Reader {
    /// Handles at most `limit` items. With `until`, stops after the first record the
    /// kernel stamped after that moment (CLOCK_MONOTONIC).
    fn batch(
        &mut self,
        ring: &mut RingBuf<MapData>,
        limit: usize,
        until: Option<u64>,
        sink: &mut dyn Sink,
    ) -> std::io::Result<Batch> {
        // Per batch, so that a stepped wall clock shows in the records within one batch.
        self.kernel.boot_to_unix_ns = monotonic_to_unix_ns();
        let now = std::time::Instant::now();
        let mut b = Batch::default();
        while b.items < limit && !b.past_stop {
            let Some(item) = ring.next() else { break };
            b.items += 1;
            let Ok(raw) = decode(&item) else {
                self.counts.malformed += 1;
                continue;
            };
            b.past_stop = until.is_some_and(|t| raw.ts_ns > t);
            let Some(mut event) = classify(&raw, &self.kernel) else {
                self.counts.malformed += 1;
                continue;
            };
            self.procs.enrich(&mut event.process, now);
            if !self.procs.wanted(&event.process) {
                self.counts.filtered += 1;
                continue;
            }
            self.counts.record(&event);
            sink.event(&event)?;
        }
        Ok(b)
    }

    fn snapshot(&self, programs: &Programs, is_final: bool, sink: &dyn Sink) -> Snapshot {
        let kernel = programs.read_counters().unwrap_or_else(|e| {
            tracing::warn!("could not read kernel counters: {e:#}");
            Default::default()
        });
        let mut counts = self.counts.clone();
        counts.enrich = self.procs.counts();
        let mut s = Snapshot {
            time_ns: unix_now_ns(),
            counts,
            kernel,
            is_final,
            ..Snapshot::default()
        };
        sink.report(&mut s);
        s
    }
}

/// Runs until stopped; returns the exit status. Write errors other than a closed pipe are
/// output failures.
pub async fn run(
    tracer: Tracer,
    info: &RunInfo,
    schedule: &Schedule,
    enrich: enrich::Settings,
    sink: &mut dyn Sink,
) -> anyhow::Result<Status> {
    let mut reader = Reader {
        kernel: crate::classify::Context {
            boot_to_unix_ns: monotonic_to_unix_ns(),
            drop_reasons: tracer.drop_reasons.clone(),
            ns_per_jiffy: tracer.ns_per_jiffy,
        },
        counts: Counts::default(),
        procs: Enricher::new(enrich),
    };
    match run_loop(tracer, info, schedule, &mut reader, sink).await {
        Ok(()) => Ok(Status::Ok),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Status::Ok),
        Err(e) => Err(StartError::Output(format!("writing output failed: {e}")).into()),
    }
}

/// The signals that stop the run (and SIGHUP, which may reopen instead).
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    Stop,
    Hangup,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Stop,
            _ = self.term.recv() => Sig::Stop,
            _ = self.hup.recv() => Sig::Hangup,
        }
    }
}

/// From here on a stop signal ends the process at once, by the signal's default action:
/// the final drain and the wait for the writer are bounded, but whoever signals twice
/// does not want to wait for them.
fn second_signal_ends_at_once(hup_too: bool) {
    let mut signals = vec![libc::SIGINT, libc::SIGTERM];
    if hup_too {
        signals.push(libc::SIGHUP);
    }
    for sig in signals {
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn every(period: Option<Duration>) -> Interval {
    let period = period.unwrap_or(NEVER);
    let mut i = interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn run_loop(
    tracer: Tracer,
    info: &RunInfo,
    schedule: &Schedule,
    reader: &mut Reader,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
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
    let mut signals = Signals::new()?;
    let hup_reopens = sink.reopens();
    // Only now: whoever waits for the start record may signal us as soon as it sees it.
    sink.start(info)?;
    let mut flush = interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats = every(schedule.stats_interval);
    let mut tick = every(sink.tick_every());
    let mut health = every(sink.health_every());
    let deadline = schedule.duration.map(|d| Instant::now() + d);
    let mut poll = every(held_back.then_some(POLL_EVERY));
    // A timed read found a full batch: read on without waiting for the next tick.
    let mut more = false;

    loop {
        let mut drained = Batch::default();
        // `biased`: signals and timers first, so that a storm on the ring buffer cannot
        // push them back; the yield after each batch lets tokio's driver see them.
        tokio::select! {
            biased;
            sig = signals.recv() => match sig {
                Sig::Hangup if hup_reopens => {
                    tracing::info!("SIGHUP: reopening the output file");
                    sink.reopen()?;
                }
                Sig::Hangup | Sig::Stop => break,
            },
            () = wait_until(deadline) => break,
            _ = stats.tick() => {
                let snap = reader.snapshot(&programs, false, sink);
                sink.health(&snap);
                sink.stats(&snap)?;
            }
            _ = health.tick() => {
                let snap = reader.snapshot(&programs, false, sink);
                sink.health(&snap);
            }
            _ = tick.tick() => if sink.tick()? == Flow::Stop { break },
            _ = flush.tick() => {
                programs.flush_kernel_log();
                sink.flush()?;
            }
            batch = a_ready_ring(&mut rings, reader, sink) => drained = batch?,
            // Records submitted without a wake-up: read them on a timer.
            _ = poll.tick(), if !more => {
                (drained, more) = a_batch_of_each(&mut rings, reader, sink)?;
            }
            () = std::future::ready(()), if more => {
                (drained, more) = a_batch_of_each(&mut rings, reader, sink)?;
            }
        }
        if drained.items > 0 {
            tokio::task::yield_now().await;
        }
    }
    second_signal_ends_at_once(!hup_reopens);
    let stop = monotonic_now_ns();
    for ring in &mut rings {
        final_drain(reader, ring.get_mut(), stop, schedule.ring_capacity, sink)?;
    }
    sink.finish()?;
    let snap = reader.snapshot(&programs, true, sink);
    sink.health(&snap);
    sink.stats(&snap)?;
    sink.flush()?;
    sink.close()
}

/// Waits until a ring buffer has records, and handles a batch of them. Its readiness is
/// kept while records remain, so that the next call comes back to it at once.
async fn a_ready_ring(
    rings: &mut [AsyncFd<RingBuf<MapData>>],
    reader: &mut Reader,
    sink: &mut dyn Sink,
) -> std::io::Result<Batch> {
    std::future::poll_fn(|cx| {
        for ring in rings.iter_mut() {
            if let std::task::Poll::Ready(guard) = ring.poll_read_ready_mut(cx) {
                let mut guard = guard?;
                let b = reader.batch(guard.get_inner_mut(), BATCH, None, sink)?;
                if b.items < BATCH {
                    guard.clear_ready();
                }
                return std::task::Poll::Ready(Ok(b));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A batch from each ring, whether it woke us or not; whether one had more.
fn a_batch_of_each(
    rings: &mut [AsyncFd<RingBuf<MapData>>],
    reader: &mut Reader,
    sink: &mut dyn Sink,
) -> std::io::Result<(Batch, bool)> {
    let mut all = Batch::default();
    let mut more = false;
    for ring in rings {
        let b = reader.batch(ring.get_mut(), BATCH, None, sink)?;
        all.items += b.items;
        more |= b.items == BATCH;
    }
    Ok((all, more))
}

/// Reads what the kernel wrote into a ring before the stop, and no more: at most what the
/// ring holds, and nothing stamped after `stop` (the programs are still attached and may
/// keep writing).
fn final_drain(
    reader: &mut Reader,
    ring: &mut RingBuf<MapData>,
    stop: u64,
    capacity: usize,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    let mut left = capacity.max(1);
    while left > 0 {
        let limit = left.min(BATCH);
        let b = reader.batch(ring, limit, Some(stop), sink)?;
        left -= b.items;
        if b.items < limit || b.past_stop {
            break;
        }
    }
    Ok(())
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
