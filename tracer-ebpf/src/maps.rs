//! Every map is bounded; userspace may resize them at load time (`map_max_entries`).
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{ConnectCall, DestKey, SockInfo, counter, defaults};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(defaults::RING_BUFFER_BYTES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static SOCKS: HashMap<u64, SockInfo> = HashMap::with_max_entries(defaults::MAX_SOCKS, 0);

#[map]
pub static CONNECT_CALLS: HashMap<u32, ConnectCall> =
    HashMap::with_max_entries(defaults::MAX_CONNECT_CALLS, 0);

#[map]
pub static RECENT_FAILURES: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(defaults::MAX_RECENT_FAILURES, 0);

// BPF_F_NO_PREALLOC is mandatory for LPM tries.
#[map]
pub static DEST_FILTER: LpmTrie<DestKey, u8> =
    LpmTrie::with_max_entries(defaults::MAX_DEST_PREFIXES, 1);
