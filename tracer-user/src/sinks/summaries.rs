//! `trace --summary-interval`: every record folded per (workload, destination); the
//! entries that changed are written every interval, and every entry at exit, before the
//! final stats.
use std::{io, time::Duration};

use super::{Flow, Sink};
use crate::{
    aggregate::Aggregator,
    clock::unix_now_ns,
    model::ConnEvent,
    output::{
        stream::SharedStream,
        summary::{self, Batch, sorted},
    },
};

pub struct Summaries {
    stream: SharedStream,
    aggregate: Aggregator,
    every: Duration,
}

impl Summaries {
    pub fn new(stream: SharedStream, max_keys: usize, every: Duration) -> Summaries {
        Summaries {
            stream,
            aggregate: Aggregator::new(max_keys),
            every,
        }
    }

    fn write_batch(&mut self, is_final: bool) -> io::Result<()> {
        let mut stream = self.stream.borrow_mut();
        let host = stream.host().to_owned();
        let batch = Batch {
            time_ns: unix_now_ns(),
            host: &host,
            is_final,
            folded: self.aggregate.folded(),
        };
        let entries = if is_final {
            sorted(self.aggregate.iter())
        } else {
            sorted(self.aggregate.changed())
        };
        for (key, e) in entries {
            stream.other(
                |out| summary::write_json(out, key, e, &batch),
                |err| summary::write_text(err, key, e, is_final),
            )?;
        }
        drop(stream);
        self.aggregate.start_interval();
        Ok(())
    }
}

impl Sink for Summaries {
    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        self.aggregate.record(e);
        Ok(())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(self.every)
    }

    fn tick(&mut self) -> io::Result<Flow> {
        self.write_batch(false)?;
        Ok(Flow::Continue)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.write_batch(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::connect,
        cli::Format,
        model::Reason,
        output::stream::tests::{in_memory, take},
        sinks::stream::StreamSink,
        stats::Snapshot,
    };
    use serde_json::Value;

    #[test]
    fn ticks_write_what_changed_and_exit_writes_everything() {
        let stream = in_memory(Format::Json, 1 << 20).shared();
        let mut p = StreamSink::new(stream.clone(), crate::sinks::stream::Events::Failures);
        let mut summaries = Summaries::new(stream.clone(), 100, Duration::from_secs(60));
        let event = |p: &mut StreamSink, s: &mut Summaries, reason, dest| {
            let e = connect(reason, dest, 1);
            p.event(&e).unwrap();
            s.event(&e).unwrap();
        };
        event(&mut p, &mut summaries, Reason::Refused, "10.0.0.2:80");
        event(&mut p, &mut summaries, Reason::Success, "10.0.0.3:80");
        assert_eq!(summaries.tick().unwrap(), Flow::Continue);
        summaries.tick().unwrap();
        event(&mut p, &mut summaries, Reason::Refused, "10.0.0.2:80");
        summaries.tick().unwrap();
        summaries.finish().unwrap();
        p.stats(&Snapshot {
            is_final: true,
            ..Snapshot::default()
        })
        .unwrap();
        let all: Vec<Value> = take(&mut stream.borrow_mut())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary = |r: &Value| {
            (
                r["destination"]["address"].as_str().unwrap().to_owned(),
                r["conntrace"]["attempts"].as_u64().unwrap(),
                r["conntrace"]["final"].as_bool().unwrap(),
            )
        };
        let events: Vec<_> = all
            .iter()
            .filter(|r| r["event"]["kind"] == "event")
            .collect();
        assert_eq!(events.len(), 2, "the two refused connects, not the success");
        let summaries: Vec<_> = all
            .iter()
            .filter(|r| r["event"]["action"] == "summary")
            .map(summary)
            .collect();
        assert_eq!(
            summaries,
            [
                ("10.0.0.2".to_owned(), 1, false),
                ("10.0.0.3".to_owned(), 1, false),
                ("10.0.0.2".to_owned(), 2, false),
                ("10.0.0.2".to_owned(), 2, true),
                ("10.0.0.3".to_owned(), 1, true),
            ]
        );
        assert_eq!(
            all.last().unwrap()["event"]["action"],
            "stats",
            "stats come last"
        );
    }
}
