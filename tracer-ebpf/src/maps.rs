//! Every map is bounded; userspace may resize them at load time (`map_max_entries`).
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use tracer_common::{Conn, ConnectCall, DestKey, ListenerKey, Owner, counter, defaults};

// The event rings: a record goes to ring `cpu % Config::rings` (see `helpers::emit`).
#[map]
pub static EVENTS0: RingBuf = RingBuf::with_byte_size(defaults::RING_BUFFER_BYTES, 0);
#[map]
pub static EVENTS1: RingBuf = RingBuf::with_byte_size(defaults::RING_BUFFER_BYTES, 0);
#[map]
pub static EVENTS2: RingBuf = RingBuf::with_byte_size(defaults::RING_BUFFER_BYTES, 0);
#[map]
pub static EVENTS3: RingBuf = RingBuf::with_byte_size(defaults::RING_BUFFER_BYTES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Where a connection entry is built (see `helpers::Scratch`).
#[map]
pub static SCRATCH: PerCpuArray<Conn> = PerCpuArray::with_max_entries(2, 0);

#[map]
pub static CONNECTING: HashMap<u64, Conn> = HashMap::with_max_entries(defaults::MAX_CONNECTING, 0);

// Allocated as connections come: most hosts hold far fewer than the bound.
#[map]
pub static ESTABLISHED: HashMap<u64, Conn> =
    HashMap::with_max_entries(defaults::MAX_ESTABLISHED, BPF_F_NO_PREALLOC);

#[map]
pub static CONNECT_CALLS: HashMap<u32, ConnectCall> =
    HashMap::with_max_entries(defaults::MAX_CONNECT_CALLS, 0);

#[map]
pub static FAILED_SOCKS: HashMap<u64, u8> =
    HashMap::with_max_entries(defaults::MAX_FAILED_SOCKS, BPF_F_NO_PREALLOC);

// BPF_F_NO_PREALLOC is mandatory for LPM tries.
#[map]
pub static DEST_FILTER: LpmTrie<DestKey, u8> =
    LpmTrie::with_max_entries(defaults::MAX_DEST_PREFIXES, BPF_F_NO_PREALLOC);

#[map]
pub static LISTENERS: LruHashMap<ListenerKey, Owner> =
    LruHashMap::with_max_entries(defaults::MAX_LISTENERS, 0);
