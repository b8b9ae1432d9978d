//! The consumers of the record stream, one shape for all: the JSON or text stream
//! ([`stream`]), periodic summaries ([`summaries`]), `diagnose`'s window ([`watch`]), the
//! live table (`crate::top`), and whatever comes next. The collector feeds one [`Sink`];
//! a [`Tee`] feeds several, so that one process can print events, summaries and more at
//! once. A new consumer is one new file here: a type that implements [`Sink`].
//!
//! Every call runs on the event loop and must not block: sinks that write do so through
//! `output::Stream`, whose writer thread owns the blocking part.
pub mod metrics;
pub mod stream;
pub mod summaries;
pub mod verdicts;
pub mod watch;

use std::{
    io,
    time::{Duration, Instant},
};

use crate::{
    model::{ConnEvent, RunInfo},
    stats::Snapshot,
};

/// Whether the run goes on after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A consumer of classified records. Only [`Sink::event`] is required; it is called for
/// every record and must stay cheap (no allocation, no I/O of its own). An `Err` ends the
/// run: `BrokenPipe` quietly, anything else as an output failure.
pub trait Sink {
    /// The programs are attached: the stream's first record.
    fn start(&mut self, _info: &RunInfo) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, event: &ConnEvent) -> io::Result<()>;

    /// Adds this sink's own health figures (output drops) to a stats snapshot before it
    /// is handed to every sink.
    fn report(&self, _snapshot: &mut Snapshot) {}

    /// A stats snapshot: every stats interval, and once at exit (`is_final`).
    fn stats(&mut self, _snapshot: &Snapshot) -> io::Result<()> {
        Ok(())
    }

    /// How often [`Sink::health`] wants a fresh snapshot; never when `None`.
    fn health_every(&self) -> Option<Duration> {
        None
    }

    /// A snapshot between stats records (metrics serve the latest figures).
    fn health(&mut self, _snapshot: &Snapshot) {}

    /// How often [`Sink::tick`] should run; never when `None`.
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (summaries, a screen to redraw); `Flow::Stop` ends the run as
    /// SIGINT would.
    fn tick(&mut self) -> io::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Hands buffered records on; called a few times a second.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether [`Sink::reopen`] means something (an output file): SIGHUP then reopens
    /// instead of ending the run.
    fn reopens(&self) -> bool {
        false
    }

    /// Reopens output files (after logrotate moved them).
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The run is over and every record has been handed over: last records (final
    /// summaries) before the final stats.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// After the final stats: let queued output out, within a bounded time.
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn start(&mut self, info: &RunInfo) -> io::Result<()> {
        (**self).start(info)
    }
    fn event(&mut self, event: &ConnEvent) -> io::Result<()> {
        (**self).event(event)
    }
    fn report(&self, snapshot: &mut Snapshot) {
        (**self).report(snapshot);
    }
    fn stats(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        (**self).stats(snapshot)
    }
    fn health_every(&self) -> Option<Duration> {
        (**self).health_every()
    }
    fn health(&mut self, snapshot: &Snapshot) {
        (**self).health(snapshot);
    }
    fn tick_every(&self) -> Option<Duration> {
        (**self).tick_every()
    }
    fn tick(&mut self) -> io::Result<Flow> {
        (**self).tick()
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn reopens(&self) -> bool {
        (**self).reopens()
    }
    fn reopen(&mut self) -> io::Result<()> {
        (**self).reopen()
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
    fn close(&mut self) -> io::Result<()> {
        (**self).close()
    }
}

/// Several sinks fed as one, in the order they were added. Each keeps its own tick
/// interval: the tee ticks as often as its most frequent sink asks, and passes a tick on
/// only to the sinks whose own interval has elapsed.
#[derive(Default)]
pub struct Tee {
    sinks: Vec<Teed>,
}

struct Teed {
    sink: Box<dyn Sink>,
    /// When its next tick is due.
    next_tick: Option<Instant>,
}

impl Tee {
    pub fn new() -> Tee {
        Tee::default()
    }

    pub fn push(&mut self, sink: impl Sink + 'static) {
        self.sinks.push(Teed {
            sink: Box::new(sink),
            next_tick: None,
        });
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Calls `f` on every sink, all of them even when one fails; the first error wins.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        let mut first = Ok(());
        for t in &mut self.sinks {
            let r = f(t.sink.as_mut());
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Sink for Tee {
    fn start(&mut self, info: &RunInfo) -> io::Result<()> {
        let now = Instant::now();
        for t in &mut self.sinks {
            t.next_tick = t.sink.tick_every().map(|every| now + every);
        }
        self.each(|s| s.start(info))
    }

    fn event(&mut self, event: &ConnEvent) -> io::Result<()> {
        for t in &mut self.sinks {
            t.sink.event(event)?;
        }
        Ok(())
    }

    fn report(&self, snapshot: &mut Snapshot) {
        for t in &self.sinks {
            t.sink.report(snapshot);
        }
    }

    fn stats(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        self.each(|s| s.stats(snapshot))
    }

    fn health_every(&self) -> Option<Duration> {
        self.sinks
            .iter()
            .filter_map(|t| t.sink.health_every())
            .min()
    }

    fn health(&mut self, snapshot: &Snapshot) {
        for t in &mut self.sinks {
            t.sink.health(snapshot);
        }
    }

    fn tick_every(&self) -> Option<Duration> {
        self.sinks.iter().filter_map(|t| t.sink.tick_every()).min()
    }

    fn tick(&mut self) -> io::Result<Flow> {
        let now = Instant::now();
        let mut flow = Flow::Continue;
        for t in &mut self.sinks {
            let (Some(due), Some(every)) = (t.next_tick, t.sink.tick_every()) else {
                continue;
            };
            if due <= now {
                // Late ticks are not made up for: the next one is a full interval away.
                let next = due + every;
                t.next_tick = Some(if next <= now { now + every } else { next });
                if t.sink.tick()? == Flow::Stop {
                    flow = Flow::Stop;
                }
            }
        }
        Ok(flow)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }

    fn reopens(&self) -> bool {
        self.sinks.iter().any(|t| t.sink.reopens())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.each(|s| s.reopen())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.each(|s| s.finish())
    }

    fn close(&mut self) -> io::Result<()> {
        self.each(|s| s.close())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    /// Records what it was called with.
    struct Probe {
        name: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        every: Option<Duration>,
    }

    impl Sink for Probe {
        fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("{} event {}", self.name, e.process.pid));
            Ok(())
        }
        fn tick_every(&self) -> Option<Duration> {
            self.every
        }
        fn tick(&mut self) -> io::Result<Flow> {
            self.log.borrow_mut().push(format!("{} tick", self.name));
            Ok(Flow::Continue)
        }
        fn finish(&mut self) -> io::Result<()> {
            self.log.borrow_mut().push(format!("{} finish", self.name));
            Err(io::Error::other(self.name))
        }
    }

    fn probe(name: &'static str, log: &Rc<RefCell<Vec<String>>>, every: u64) -> Probe {
        Probe {
            name,
            log: log.clone(),
            every: (every > 0).then(|| Duration::from_millis(every)),
        }
    }

    #[test]
    fn every_sink_sees_every_event_in_order() {
        let log = Rc::default();
        let mut tee = Tee::new();
        tee.push(probe("a", &log, 0));
        tee.push(probe("b", &log, 0));
        let mut e = crate::output::tests::refused();
        for pid in [1, 2] {
            e.process.pid = pid;
            tee.event(&e).unwrap();
        }
        assert_eq!(
            *log.borrow(),
            ["a event 1", "b event 1", "a event 2", "b event 2"]
        );
    }

    #[test]
    fn ticks_reach_only_the_sinks_that_are_due() {
        let log = Rc::default();
        let mut tee = Tee::new();
        tee.push(probe("fast", &log, 1));
        tee.push(probe("slow", &log, 60_000));
        tee.push(probe("never", &log, 0));
        assert_eq!(tee.tick_every(), Some(Duration::from_millis(1)));
        tee.start(&RunInfo::default()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tee.tick().unwrap(), Flow::Continue);
        assert_eq!(*log.borrow(), ["fast tick"]);
    }

    #[test]
    fn finishing_reaches_every_sink_even_after_an_error() {
        let log = Rc::default();
        let mut tee = Tee::new();
        tee.push(probe("a", &log, 0));
        tee.push(probe("b", &log, 0));
        let err = tee.finish().unwrap_err();
        assert_eq!(err.to_string(), "a");
        assert_eq!(*log.borrow(), ["a finish", "b finish"]);
    }
}
