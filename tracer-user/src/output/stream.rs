//! The record stream: formats records (JSON lines, or text columns for people) into the
//! writer's queue, on the event loop, without blocking and without allocating per record.
//! The sinks that write to it (events and stats, summaries, verdicts) share one
//! [`SharedStream`], so their records come out in the order they were made.
//!
//! In text mode only the connection records go to stdout (a table); the start line, stats
//! and summaries go to stderr, one line each.
use std::{cell::RefCell, io, rc::Rc};

use super::{
    json,
    queue::{Grace, Producer, Tally},
    text,
    time::Timestamps,
    to_stderr,
    writer::{self, Closed, Destination, Writer},
};
use crate::{
    cli::Format,
    model::{ConnEvent, RunInfo},
    stats::Snapshot,
};

/// Bytes the queue may hold before connection records are dropped (`--output-buffer`).
pub const DEFAULT_BUDGET_BYTES: usize = 8 << 20;

/// One stream, shared by the sinks that write to it (all on the event loop's thread).
pub type SharedStream = Rc<RefCell<Stream>>;

#[derive(Debug)]
pub struct Stream {
    format: Format,
    host: String,
    producer: Producer,
    /// `None` in unit tests, which read the queue themselves.
    writer: Option<Writer>,
    grace: Grace,
    reopens: bool,
    header_written: bool,
    stamps: Timestamps,
}

impl Stream {
    /// Opens the destination and starts its writer thread.
    pub fn open(
        format: Format,
        host: String,
        destination: &Destination,
        budget_bytes: usize,
        grace: Grace,
    ) -> io::Result<Stream> {
        let (producer, writer) = writer::spawn(destination, budget_bytes)?;
        Ok(Stream {
            format,
            host,
            producer,
            writer: Some(writer),
            grace,
            reopens: matches!(destination, Destination::File(_)),
            header_written: false,
            stamps: Timestamps::default(),
        })
    }

    pub fn shared(self) -> SharedStream {
        Rc::new(RefCell::new(self))
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The first record of a JSON stream; in text mode a line on stderr.
    pub fn start(&mut self, info: &RunInfo) -> io::Result<()> {
        match self.format {
            Format::Json => self
                .producer
                .record(true, |out| json::write_start(out, info)),
            Format::Text => {
                to_stderr(|err| text::write_start(err, info));
                Ok(())
            }
        }
    }

    /// A connection record; dropped (and counted) when the queue is full.
    pub fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        let (host, stamps) = (&self.host, &mut self.stamps);
        match self.format {
            Format::Json => self
                .producer
                .record(false, |out| json::write_event(out, e, host, stamps)),
            Format::Text => {
                if !self.header_written {
                    self.header_written = true;
                    self.producer.record(true, text::write_header)?;
                }
                self.producer.record(false, |out| text::write_event(out, e))
            }
        }
    }

    /// A stats record; in text mode a line on stderr.
    pub fn stats(&mut self, s: &Snapshot) -> io::Result<()> {
        let host = &self.host;
        match self.format {
            Format::Json => self
                .producer
                .record(true, |out| json::write_stats(out, s, host)),
            Format::Text => {
                to_stderr(|err| text::write_stats(err, s));
                Ok(())
            }
        }
    }

    /// Any other JSON record (summaries, verdicts); `format` says what text mode writes
    /// to stderr instead, if anything.
    pub fn other(
        &mut self,
        json: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
        text: impl FnOnce(&mut io::StderrLock<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.producer.record(true, json),
            Format::Text => {
                to_stderr(text);
                Ok(())
            }
        }
    }

    /// Hands what was formatted to the writer, and reports a failed write.
    pub fn flush(&mut self) -> io::Result<()> {
        self.producer.hand_off();
        match self.producer.queue().take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the output is a file that SIGHUP reopens.
    pub fn reopens(&self) -> bool {
        self.reopens
    }

    pub fn reopen(&mut self) {
        self.producer.reopen();
    }

    /// Records dropped so far because the reader did not keep up.
    pub fn dropped(&self) -> Tally {
        self.producer.dropped()
    }

    /// Hands the last records over and gives the writer its grace time to write them.
    pub fn close(&mut self) -> Closed {
        self.producer.hand_off();
        match &mut self.writer {
            Some(w) => w.close(self.grace),
            None => Closed::Written,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::output::queue::{Item, Queue};
    use std::{sync::Arc, time::Duration};

    /// A stream without a writer thread; [`take`] reads what it queued.
    pub fn in_memory(format: Format, budget_bytes: usize) -> Stream {
        Stream {
            format,
            host: "node-1".into(),
            producer: Producer::new(Arc::new(Queue::default()), budget_bytes),
            writer: None,
            grace: Grace::default(),
            reopens: false,
            header_written: false,
            stamps: Timestamps::default(),
        }
    }

    /// Everything queued so far, as text.
    pub fn take(stream: &mut Stream) -> String {
        stream.producer.hand_off();
        let queue = stream.producer.queue().clone();
        queue.close_and_wait(Grace {
            stall: Duration::ZERO,
            max: Duration::ZERO,
        });
        let mut out = Vec::new();
        while let Some(item) = queue.next() {
            if let Item::Chunk(c) = item {
                out.extend_from_slice(&c.bytes);
                queue.written(c);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_stalled_reader_costs_counted_records_not_the_event_loop() {
        let mut s = in_memory(Format::Json, 0);
        let e = crate::output::tests::refused();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            s.event(&e).unwrap();
        }
        s.stats(&Snapshot::default()).unwrap();
        let out = take(&mut s);
        let written = out.lines().filter(|l| l.contains("\"refused\"")).count() as u64;
        assert!(written > 0 && s.dropped().events > 0);
        assert_eq!(written + s.dropped().events, 10_000);
        assert_eq!(s.dropped().other, 0, "the stats record got through");
        assert!(out.lines().last().unwrap().contains("\"stats\""));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
