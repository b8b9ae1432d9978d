//! What the run has seen and lost, for the periodic and final stats records.
use std::collections::BTreeMap;

use crate::{enrich::EnrichCounts, loader::KernelCounters, model::ConnEvent};

/// Userspace's own counts; the kernel's come from [`KernelCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records by `action.reason` (for example `connect.refused`).
    pub by_kind: BTreeMap<String, u64>,
    /// Records received from the kernel.
    pub received: u64,
    /// Ring-buffer items that were not a valid record.
    pub malformed: u64,
    /// Records dropped by the userspace filters (`--pod`, `--namespace`, `--container`).
    pub filtered: u64,
    /// Lookups (procfs, identity) that did not serve their record.
    pub enrich: EnrichCounts,
}

impl Counts {
    pub fn record(&mut self, event: &ConnEvent) {
        self.received += 1;
        // The key is built on the stack: this runs for every event, and the map holds a
        // dozen keys at most, so only a new one is allocated.
        let (action, reason) = (event.action.as_str(), event.reason.as_str());
        let mut buf = [0u8; 64];
        let len = action.len() + 1 + reason.len();
        buf[..action.len()].copy_from_slice(action.as_bytes());
        buf[action.len()] = b'.';
        buf[action.len() + 1..len].copy_from_slice(reason.as_bytes());
        let key = std::str::from_utf8(&buf[..len]).unwrap_or_default();
        match self.by_kind.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.by_kind.insert(key.to_owned(), 1);
            }
        }
    }
}

/// Records dropped or not written, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Connection records.
    pub events: u64,
    /// Every other record (start, stats, summaries, verdicts).
    pub other: u64,
}

impl Tally {
    pub fn add(&mut self, o: Tally) {
        self.events += o.events;
        self.other += o.other;
    }

    pub fn is_zero(self) -> bool {
        self == Tally::default()
    }
}

/// The output's own figures: what the reader of the stream did not get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputCounts {
    /// Records dropped because the output queue was full (a slow or stalled reader), or
    /// still unwritten when the run ended.
    pub dropped: Tally,
}

/// A stats record: both sides' counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: u64,
    pub counts: Counts,
    pub kernel: KernelCounters,
    pub output: OutputCounts,
    /// Whether this is the last one of the run.
    pub is_final: bool,
}
