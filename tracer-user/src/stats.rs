//! What the run has seen and lost, for the periodic and final stats records.
use std::collections::BTreeMap;

use crate::{loader::KernelCounters, model::ConnEvent};

/// Userspace's own counts; the kernel's come from [`KernelCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records by `action.reason` (for example `connect.refused`).
    pub by_kind: BTreeMap<String, u64>,
    /// Records received from the kernel.
    pub received: u64,
    /// Ring-buffer items that were not a valid record.
    pub malformed: u64,
}

impl Counts {
    pub fn record(&mut self, event: &ConnEvent) {
        self.received += 1;
        let key = format!("{}.{}", event.action.as_str(), event.reason.as_str());
        *self.by_kind.entry(key).or_default() += 1;
    }
}

/// A stats record: both sides' counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: u64,
    pub counts: Counts,
    pub kernel: KernelCounters,
    /// Whether this is the last one of the run.
    pub is_final: bool,
}
