//! Anonymous sets, as `nft` 1.0 writes them: what a rule's `{ ... }` becomes in the batch.
//!
//! A port set (`tcp dport { 80, 443 }`, `!= { ... }`) holds one element per port, as does an
//! address set of single addresses (`ip daddr { 10.0.0.1, 10.0.0.2 }`, a hash set). An address
//! set with prefixes (`ip daddr { 10.0.0.0/8, ... }`, `--compact`) is an interval set: `nft` turns the
//! prefixes into ranges, merges ranges that touch, and sends, in ascending order, an
//! interval-end element at the zero address unless a range starts there, then each range's
//! first address and (unless it runs to the last address) the address after it flagged as an
//! interval end. The set's user data (key byte order, auto-merge, the `typeof` expression of
//! the key) is byte for byte what `nft` 1.0.6 attaches, so `nft` lists what we wrote exactly as
//! what it wrote itself. Pure data: `mod.rs` turns it into messages.

use crate::plan::{Cidr, Family, Proto};

/// `NFT_SET_ANONYMOUS | NFT_SET_CONSTANT`, and `NFT_SET_INTERVAL`.
const SET_ANONYMOUS_CONSTANT: u32 = 0x1 | 0x2;
const SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub const ELEM_INTERVAL_END: u32 = 0x1;

/// What a set's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Destination ports of this protocol (`inet_service`).
    Ports(Proto),
    /// Destination addresses of this family, as intervals.
    Addrs(Family),
}

/// One anonymous set, sent right before the rule that looks it up by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    pub id: u32,
    pub kind: SetKind,
    /// Keys (network byte order) and element flags, in send order.
    pub elements: Vec<(Vec<u8>, u32)>,
    /// An interval set (address prefixes), not a hash set of keys.
    pub interval: bool,
}

impl AnonSet {
    /// Ports, one element each: a port named twice is one element, as `nft` makes it of a
    /// literal (the kernel refuses a second copy with EEXIST). Upstream's `! --dports 53,PORT`
    /// names 53 twice with `-e 53`; `--compact` lists already name each port once (the walk's
    /// `ports_of`).
    pub fn ports(id: u32, proto: Proto, ports: impl IntoIterator<Item = u16>) -> AnonSet {
        let mut seen = std::collections::HashSet::new();
        AnonSet {
            id,
            kind: SetKind::Ports(proto),
            elements: ports
                .into_iter()
                .filter(|p| seen.insert(*p))
                .map(|p| (p.to_be_bytes().to_vec(), 0))
                .collect(),
            interval: false,
        }
    }

    /// Addresses: a hash set of keys when every CIDR is a single address (as `nft` makes
    /// `{ 10.0.0.1, 10.0.0.2 }`), else an interval set.
    pub fn addrs(id: u32, family: Family, cidrs: &[Cidr]) -> AnonSet {
        let hosts = cidrs
            .iter()
            .all(|c| c.0.prefix_len() == c.0.max_prefix_len());
        let elements = if hosts {
            cidrs
                .iter()
                .map(|c| match c.0 {
                    ipnet::IpNet::V4(n) => (n.addr().octets().to_vec(), 0),
                    ipnet::IpNet::V6(n) => (n.addr().octets().to_vec(), 0),
                })
                .collect()
        } else {
            interval_elements(family, cidrs)
        };
        AnonSet {
            id,
            kind: SetKind::Addrs(family),
            elements,
            interval: !hosts,
        }
    }

    /// `NFTA_SET_KEY_TYPE`: nft's datatype ids (inet_service 13, ipv4_addr 7, ipv6_addr 8).
    pub fn key_type(&self) -> u32 {
        match self.kind {
            SetKind::Ports(_) => 13,
            SetKind::Addrs(Family::V4) => 7,
            SetKind::Addrs(Family::V6) => 8,
        }
    }

    pub fn key_len(&self) -> u32 {
        match self.kind {
            SetKind::Ports(_) => 2,
            SetKind::Addrs(Family::V4) => 4,
            SetKind::Addrs(Family::V6) => 16,
        }
    }

    pub fn flags(&self) -> u32 {
        if self.interval {
            SET_ANONYMOUS_CONSTANT | SET_INTERVAL
        } else {
            SET_ANONYMOUS_CONSTANT
        }
    }

    /// The user data `nft` 1.0.6 attaches: key byte order big endian; for interval sets
    /// auto-merge; then the key's `typeof` (a payload expression: protocol and field).
    pub fn userdata(&self) -> Vec<u8> {
        // TLVs of libnftnl's udata: type (1 byte), length (1 byte), value.
        let tlv = |t: u8, v: &[u8]| -> Vec<u8> {
            let mut out = vec![t, v.len() as u8];
            out.extend_from_slice(v);
            out
        };
        let u32v = |v: u32| v.to_le_bytes();
        // nft's proto_desc ids and header field indexes of the key's payload expression.
        let (desc, field) = match self.kind {
            SetKind::Ports(Proto::Tcp) => (8, 2),
            SetKind::Ports(Proto::Udp) => (6, 2),
            SetKind::Addrs(Family::V4) => (12, 12),
            SetKind::Addrs(Family::V6) => (13, 9),
        };
        let payload = [tlv(0, &u32v(desc)), tlv(1, &u32v(field))].concat();
        // NFTNL_UDATA_SET_TYPEOF: the expression kind (7: payload) and its data.
        let typeof_ = [tlv(0, &u32v(7)), tlv(1, &payload)].concat();
        let mut out = tlv(0, &u32v(2)); // NFTNL_UDATA_SET_KEYBYTEORDER: big endian
        if self.interval {
            out.extend(tlv(2, &u32v(1))); // NFTNL_UDATA_SET_MERGE_ELEMENTS
        }
        out.extend(tlv(3, &typeof_));
        out
    }
}

/// The elements of an interval set holding `cidrs` (one family), as `nft` sends them.
fn interval_elements(family: Family, cidrs: &[Cidr]) -> Vec<(Vec<u8>, u32)> {
    let (bits, bytes) = match family {
        Family::V4 => (32u32, 4usize),
        Family::V6 => (128u32, 16usize),
    };
    let max: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let mut ranges: Vec<(u128, u128)> = cidrs
        .iter()
        .map(|c| {
            let (addr, plen) = match c.0 {
                ipnet::IpNet::V4(n) => (u128::from(u32::from(n.network())), n.prefix_len()),
                ipnet::IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
            };
            let host = bits - u32::from(plen);
            let last = if host >= 128 {
                u128::MAX
            } else {
                addr | ((1u128 << host) - 1)
            };
            (addr, last.min(max))
        })
        .collect();
    ranges.sort();
    // Merge ranges that overlap or touch, as nft's auto-merge does.
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let key = |v: u128| v.to_be_bytes()[16 - bytes..].to_vec();
    let mut out = Vec::new();
    if merged.first().is_some_and(|(a, _)| *a != 0) {
        out.push((key(0), ELEM_INTERVAL_END));
    }
    for (a, b) in merged {
        out.push((key(a), 0));
        if b != max {
            out.push((key(b + 1), ELEM_INTERVAL_END));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr(c.parse().unwrap())).collect()
    }

    fn hex(elements: &[(Vec<u8>, u32)]) -> Vec<String> {
        elements
            .iter()
            .map(|(k, f)| {
                let h: String = k.iter().map(|b| format!("{b:02x}")).collect();
                format!("{h}{}", if *f == ELEM_INTERVAL_END { " end" } else { "" })
            })
            .collect()
    }

    #[test]
    fn a_port_named_twice_is_one_element() {
        let s = AnonSet::ports(1, Proto::Tcp, [53, 15008, 53]);
        assert_eq!(hex(&s.elements), ["0035", "3aa0"]);
    }

    #[test]
    fn intervals_as_nft_sends_them() {
        // Captured from `nft --debug=netlink` 1.0.6 for the same sets.
        let s = AnonSet::addrs(
            1,
            Family::V4,
            &cidrs(&["192.168.0.0/16", "10.0.0.0/8", "172.16.1.0/24"]),
        );
        assert_eq!(
            hex(&s.elements),
            [
                "00000000 end",
                "0a000000",
                "0b000000 end",
                "ac100100",
                "ac100200 end",
                "c0a80000",
                "c0a90000 end"
            ]
        );
        let touching = AnonSet::addrs(
            1,
            Family::V4,
            &cidrs(&["10.0.1.0/24", "10.0.2.0/24", "255.0.0.0/8"]),
        );
        assert_eq!(
            hex(&touching.elements),
            ["00000000 end", "0a000100", "0a000300 end", "ff000000"]
        );
        let from_zero = AnonSet::addrs(1, Family::V4, &cidrs(&["0.0.0.0/8"]));
        assert_eq!(hex(&from_zero.elements), ["00000000", "01000000 end"]);
        // Single addresses only: a hash set of keys, as nft makes `{ 1.2.3.4, 5.6.7.8 }`.
        let hosts = AnonSet::addrs(1, Family::V4, &cidrs(&["1.2.3.4/32", "5.6.7.8/32"]));
        assert!(!hosts.interval);
        assert_eq!(hex(&hosts.elements), ["01020304", "05060708"]);
        assert_eq!(hosts.flags(), 3);
        assert_eq!(hosts.userdata().len(), 28);
        let v6 = AnonSet::addrs(1, Family::V6, &cidrs(&["fd00::/32", "2001:db8::/48"]));
        assert_eq!(v6.elements.len(), 5);
        assert_eq!(v6.elements[0].1, ELEM_INTERVAL_END);
    }

    #[test]
    fn userdata_as_nft_writes_it() {
        // `nft --debug=mnl` 1.0.6, NFTA_SET_USERDATA of each kind.
        let v4 = AnonSet::addrs(1, Family::V4, &cidrs(&["10.0.0.0/8"])).userdata();
        assert_eq!(
            v4,
            [
                0, 4, 2, 0, 0, 0, 2, 4, 1, 0, 0, 0, 3, 0x14, 0, 4, 7, 0, 0, 0, 1, 0x0c, 0, 4, 0x0c,
                0, 0, 0, 1, 4, 0x0c, 0, 0, 0
            ]
        );
        let tcp = AnonSet::ports(1, Proto::Tcp, []).userdata();
        assert_eq!(
            tcp,
            [
                0, 4, 2, 0, 0, 0, 3, 0x14, 0, 4, 7, 0, 0, 0, 1, 0x0c, 0, 4, 8, 0, 0, 0, 1, 4, 2, 0,
                0, 0
            ]
        );
        let v6 = AnonSet::addrs(1, Family::V6, &cidrs(&["fd00::/8"])).userdata();
        assert_eq!(&v6[22..32], [0, 4, 0x0d, 0, 0, 0, 1, 4, 9, 0]);
    }
}
