//! The record stream as a sink: the start record, the connection records `trace` prints
//! (failures, resets and losses by default, everything with `--all`), the stats records,
//! and at exit a bounded wait for the writer, so that a reader that stopped reading
//! cannot hold conntrace up.
use std::io;

use super::Sink;
use crate::{
    model::{Action, ConnEvent, Outcome, RunInfo},
    output::{stream::SharedStream, text, to_stderr, writer::Closed},
    stats::Snapshot,
};

/// Which connection records the stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Events {
    /// Failures, resets, losses, closes with retransmits (the default).
    Failures,
    /// Everything (`--all`).
    All,
    /// None (`--no-events`).
    None,
}

pub struct StreamSink {
    stream: SharedStream,
    events: Events,
    /// The final stats, to repeat on stderr if the reader never gets them.
    last: Option<Snapshot>,
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

impl StreamSink {
    pub fn new(stream: SharedStream, events: Events) -> StreamSink {
        StreamSink {
            stream,
            events,
            last: None,
        }
    }
}

impl Sink for StreamSink {
    fn start(&mut self, info: &RunInfo) -> io::Result<()> {
        let mut stream = self.stream.borrow_mut();
        stream.start(info)?;
        // The start record goes out at once: whoever waits for it may signal us next.
        stream.flush()
    }

    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let printed = match self.events {
            Events::All => true,
            Events::Failures => printed_by_default(e),
            Events::None => false,
        };
        if printed {
            self.stream.borrow_mut().event(e)
        } else {
            Ok(())
        }
    }

    fn report(&self, snapshot: &mut Snapshot) {
        snapshot.output.dropped.add(self.stream.borrow().dropped());
    }

    fn stats(&mut self, s: &Snapshot) -> io::Result<()> {
        if s.is_final {
            self.last = Some(s.clone());
        }
        self.stream.borrow_mut().stats(s)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.borrow_mut().flush()
    }

    fn reopens(&self) -> bool {
        self.stream.borrow().reopens()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.stream.borrow_mut().reopen();
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        match self.stream.borrow_mut().close() {
            Closed::Written => Ok(()),
            Closed::Failed(e) => Err(e),
            Closed::Stalled { unwritten } => {
                tracing::warn!(
                    "the output's reader stopped reading: {} records could not be written at \
                     exit; final stats follow",
                    unwritten.events + unwritten.other
                );
                if let Some(mut last) = self.last.take() {
                    last.output.dropped.add(unwritten);
                    to_stderr(|err| text::write_stats(err, &last));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cli::Format,
        model::Reason,
        output::stream::tests::{in_memory, take},
    };

    #[test]
    fn prints_failures_by_default_and_everything_with_all() {
        let mut ok = crate::output::tests::refused();
        ok.reason = Reason::Success;
        ok.outcome = Outcome::Success;
        let failed = crate::output::tests::refused();
        for (events, expected) in [(Events::Failures, 1), (Events::All, 2), (Events::None, 0)] {
            let stream = in_memory(Format::Json, 1 << 20).shared();
            let mut sink = StreamSink::new(stream.clone(), events);
            sink.event(&ok).unwrap();
            sink.event(&failed).unwrap();
            let mut snap = Snapshot::default();
            sink.report(&mut snap);
            sink.stats(&snap).unwrap();
            let out = take(&mut stream.borrow_mut());
            assert_eq!(out.lines().count(), expected + 1, "{out}");
            assert!(out.lines().last().unwrap().contains("\"output_dropped\":0"));
        }
    }
}
