//! `diagnose`'s window: every record folded per (workload, destination), and the last
//! stats (for the count of records lost in the kernel). Nothing is written while it runs.
use std::io;

use super::Sink;
use crate::{aggregate::Aggregator, model::ConnEvent, stats::Snapshot};

pub struct Watch {
    pub aggregate: Aggregator,
    pub last: Option<Snapshot>,
}

impl Watch {
    pub fn new(max_keys: usize) -> Watch {
        Watch {
            aggregate: Aggregator::new(max_keys),
            last: None,
        }
    }
}

impl Sink for Watch {
    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        self.aggregate.record(e);
        Ok(())
    }

    fn stats(&mut self, s: &Snapshot) -> io::Result<()> {
        self.last = Some(s.clone());
        Ok(())
    }
}
