//! How upstream's nftables generator spells Istio ambient's in-pod rules differently from its
//! iptables one: one `NftSpelling` per shape of rule, named once, used by the walk. Only the
//! order and presence of matches differ, and the words of a masked mark (`MarkWords`), never
//! their meaning. (xtables' bare `-m tcp` / `-m udp` never reaches nft: `NftSpelling::apply`.)

use crate::plan::{MarkWords, NftSpelling};

/// `meta mark & 0xfff == 0x539 counter ct mark set ...`: the one rule worded with `&`.
pub const MARK_TO_CONNMARK: NftSpelling = NftSpelling {
    mark_words: MarkWords::MetaAmpersand,
    ..NftSpelling::AS_IPTABLES
};

/// `meta l4proto tcp ip saddr 169.254.7.127`: the protocol before the address.
pub const PROTO_FIRST: NftSpelling = NftSpelling {
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `ip daddr != 127.0.0.1/32 tcp dport != 15008 mark and 0xfff  != 0x539`: the port implies
/// the protocol, and upstream's IPv4 words carry a stray space.
pub const INBOUND_V4: NftSpelling = NftSpelling {
    drop_proto: true,
    mark_words: MarkWords::AndWide,
    ..NftSpelling::AS_IPTABLES
};

/// `ip6 daddr != ::1/128 tcp dport != 15008 mark and 0xfff != 0x539`.
pub const INBOUND_V6: NftSpelling = NftSpelling {
    drop_proto: true,
    ..NftSpelling::AS_IPTABLES
};

/// `oifname != lo mark and 0xfff != 0x539 udp dport 53` (and the TCP twin): the port implies
/// the protocol.
pub const PORT_IMPLIES_PROTO: NftSpelling = NftSpelling {
    drop_proto: true,
    ..NftSpelling::AS_IPTABLES
};

/// `udp dport 53 meta mark and 0xfff == 0x539` (raw): the port first, no protocol match.
pub const PORT_FIRST: NftSpelling = NftSpelling {
    drop_proto: true,
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo ip daddr != 127.0.0.1/32`: the interface first.
pub const LOOPBACK_FIRST: NftSpelling = NftSpelling {
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `meta l4proto tcp ip daddr != 127.0.0.1/32 mark and 0xfff != 0x539`: the protocol first.
pub const OUTBOUND: NftSpelling = NftSpelling {
    order: Some(&[1, 0, 2]),
    ..NftSpelling::AS_IPTABLES
};

/// `jump istio-output`: upstream's ambient jumps carry no counter.
pub const JUMP: NftSpelling = NftSpelling {
    counter: false,
    ..NftSpelling::AS_IPTABLES
};
