//! Ring-buffer bytes → wire records. The only place that reinterprets kernel bytes.
use tracer_common::Event;

/// Why a ring-buffer item was not a record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("ring-buffer item of {0} bytes, expected {expected}", expected = size_of::<Event>())]
pub struct BadLength(pub usize);

/// Decodes one ring-buffer item. The length is checked, and the bytes are copied out with
/// an unaligned read: ring-buffer items are 8-byte aligned today, but nothing promises it.
pub fn decode(bytes: &[u8]) -> Result<Event, BadLength> {
    if bytes.len() != size_of::<Event>() {
        return Err(BadLength(bytes.len()));
    }
    // SAFETY: the length matches, and Event is plain data (repr(C) integers and byte
    // arrays), valid for any bit pattern.
    Ok(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tracer_common::{AF_INET, kind};

    /// The bytes the kernel would write for `event`.
    pub fn bytes_of(event: &Event) -> Vec<u8> {
        // SAFETY: Event is plain data; reading its bytes is always valid.
        unsafe {
            std::slice::from_raw_parts((event as *const Event).cast::<u8>(), size_of::<Event>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_record_from_its_bytes() {
        let mut e = Event::ZERO;
        e.kind = kind::CONNECT_CLOSED;
        e.errno = 111;
        e.conn.dport = 8080;
        e.conn.family = AF_INET;
        e.conn.tgid = 4242;
        e.conn.comm[..4].copy_from_slice(b"curl");
        assert_eq!(decode(&bytes_of(&e)), Ok(e));
    }

    #[test]
    fn decodes_from_a_fixed_byte_layout() {
        // The offsets are the wire format: a change here is a change for every kernel object.
        let mut raw = [0u8; 176];
        raw[0..8].copy_from_slice(&1_000u64.to_le_bytes()); // ts_ns
        raw[8..16].copy_from_slice(&5u64.to_le_bytes()); // bytes_received
        raw[24 + 72 + 12..24 + 88].copy_from_slice(&[10, 0, 0, 1]); // conn.daddr, IPv4-mapped tail
        raw[24 + 88..24 + 92].copy_from_slice(&77u32.to_le_bytes()); // conn.tgid
        raw[24 + 104..24 + 108].copy_from_slice(&2u32.to_le_bytes()); // conn.syn_retransmits
        raw[24 + 118..24 + 120].copy_from_slice(&443u16.to_le_bytes()); // conn.dport
        raw[24 + 128..24 + 132].copy_from_slice(b"wget"); // conn.comm
        raw[168..172].copy_from_slice(&110u32.to_le_bytes()); // errno
        raw[172] = kind::RESET_RECEIVED; // kind
        let e = decode(&raw).unwrap();
        assert_eq!((e.ts_ns, e.bytes_received), (1_000, 5));
        assert_eq!(e.conn.daddr[12..], [10, 0, 0, 1]);
        assert_eq!(e.conn.tgid, 77);
        assert_eq!(e.errno, 110);
        assert_eq!(e.conn.syn_retransmits, 2);
        assert_eq!(e.conn.dport, 443);
        assert_eq!(e.kind, kind::RESET_RECEIVED);
        assert_eq!(&e.conn.comm[..4], b"wget");
    }

    #[test]
    fn refuses_short_and_long_items() {
        assert_eq!(decode(&[0u8; 175]), Err(BadLength(175)));
        assert_eq!(decode(&[0u8; 177]), Err(BadLength(177)));
        assert_eq!(decode(&[]), Err(BadLength(0)));
    }

    #[test]
    fn decodes_unaligned_input() {
        let mut e = Event::ZERO;
        e.conn.tgid = 9;
        let mut raw = [0u8; 177];
        raw[1..].copy_from_slice(&bytes_of(&e));
        assert_eq!(decode(&raw[1..]).unwrap().conn.tgid, 9);
    }
}
