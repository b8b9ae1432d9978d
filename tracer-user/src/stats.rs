//! What the run has seen and lost, for the periodic and final stats records.
use std::collections::BTreeMap;

use crate::{
    enrich::EnrichCounts,
    loader::KernelCounters,
    model::{Action, ConnEvent, Reason},
};

/// Userspace's own counts; the kernel's come from [`KernelCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records by action and reason; [`Counts::by_kind_named`] names them.
    pub by_kind: BTreeMap<(Action, Reason), u64>,
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
        // Keyed by the two enums, not by their name: this runs for every record.
        *self
            .by_kind
            .entry((event.action, event.reason))
            .or_default() += 1;
    }

    /// Records by `action.reason` (for example `connect.refused`), for the stats records.
    pub fn by_kind_named(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .iter()
            .map(|((action, reason), n)| (format!("{}.{}", action.as_str(), reason.as_str()), *n))
            .collect()
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
