//! Anonymous sets, as `nft` 1.0 writes them: what a rule's `{ ... }` becomes in the batch.
//!
//! A port set (`tcp dport { 80, 443 }`, `!= { ... }`) holds one element per port, as does an
//! address set of single addresses (`ip daddr { 10.0.0.1, 10.0.0.2 }`, a hash set). An address
//! set with prefixes (`ip daddr { 10.0.0.0/8, ... }`, `--compact`) is an interval set: `nft` turns the
//! prefixes into ranges, merges ranges that touch, and sends, in ascending order, an
//! interval-end element at the zero address unless a range starts there, then each range's
//! first address and (unless it runs to the last address) the address after it flagged as an
//! interval end. A range that runs to the last address has no end element: its first element
//! carries the user data `nft` marks an open interval with, and the set's declared size counts
//! the end element it does not send (`nft` 1.0.6 declares `{ 10.0.0.0/8, 128.0.0.0/1 }`, four
//! elements, with size 5). The set's user data (key byte order, auto-merge, the `typeof`
//! expression of the key) is byte for byte what `nft` 1.0.6 attaches, so `nft` lists what we
//! wrote exactly as what it wrote itself. Pure data: `mod.rs` turns it into messages.

use crate::plan::{Cidr, Family, Proto};

const SET_ANONYMOUS_CONSTANT: u32 = (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32;
const SET_INTERVAL: u32 = libc::NFT_SET_INTERVAL as u32;
const ELEM_INTERVAL_END: u32 = libc::NFT_SET_ELEM_INTERVAL_END as u32;
/// libnftnl's element user data TLV `NFTNL_UDATA_SET_ELEM_FLAGS` and its flag
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (libnftnl/udata.h; no libc name).
const UDATA_SET_ELEM_FLAGS: u8 = 1;
const SET_ELEM_F_INTERVAL_OPEN: u32 = 0x1;

/// One element as sent: its key (network byte order), whether it ends an interval, and
/// whether it starts the interval that runs to the last address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub key: Vec<u8>,
    pub end: bool,
    pub open: bool,
}

impl Element {
    fn key(key: Vec<u8>) -> Element {
        Element {
            key,
            end: false,
            open: false,
        }
    }

    /// `NFTA_SET_ELEM_FLAGS`.
    pub fn flags(&self) -> u32 {
        if self.end { ELEM_INTERVAL_END } else { 0 }
    }

    /// `NFTA_SET_ELEM_USERDATA`, as `nft` 1.0.6 writes it: the open-interval flag (a
    /// little-endian u32 TLV), or nothing.
    pub fn userdata(&self) -> Vec<u8> {
        if !self.open {
            return Vec::new();
        }
        let mut out = vec![UDATA_SET_ELEM_FLAGS, 4];
        out.extend_from_slice(&SET_ELEM_F_INTERVAL_OPEN.to_le_bytes());
        out
    }

    /// What the kernel reports back for it: key, flags, user data.
    pub fn wire(&self) -> (Vec<u8>, u32, Vec<u8>) {
        (self.key.clone(), self.flags(), self.userdata())
    }
}

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
    /// In send order.
    pub elements: Vec<Element>,
    /// An interval set (address prefixes), not a hash set of keys.
    pub interval: bool,
}

impl AnonSet {
    /// The set's header, as `nft` declares an anonymous set.
    pub fn header(&self) -> super::wire::SetHeader<'static> {
        super::wire::SetHeader {
            name: "__set%d",
            id: self.id,
            flags: self.flags(),
            key_type: self.key_type(),
            key_len: self.key_len(),
            size: self.size(),
            userdata: self.userdata(),
        }
    }
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
                .map(|p| Element::key(p.to_be_bytes().to_vec()))
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
                    ipnet::IpNet::V4(n) => Element::key(n.addr().octets().to_vec()),
                    ipnet::IpNet::V6(n) => Element::key(n.addr().octets().to_vec()),
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

    /// `NFTA_SET_DESC_SIZE` as `nft` declares it: the elements, and the end element of an
    /// interval open to the last address, which is counted though not sent.
    pub fn size(&self) -> u32 {
        let open = self.elements.last().is_some_and(|e| e.open);
        self.elements.len() as u32 + u32::from(open)
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
fn interval_elements(family: Family, cidrs: &[Cidr]) -> Vec<Element> {
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
    let end = |v: u128| Element {
        key: key(v),
        end: true,
        open: false,
    };
    let mut out = Vec::new();
    if merged.first().is_some_and(|(a, _)| *a != 0) {
        out.push(end(0));
    }
    for (a, b) in merged {
        out.push(Element {
            key: key(a),
            end: false,
            open: b == max,
        });
        if b != max {
            out.push(end(b + 1));
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

    fn hex(elements: &[Element]) -> Vec<String> {
        elements
            .iter()
            .map(|e| {
                let h: String = e.key.iter().map(|b| format!("{b:02x}")).collect();
                let end = if e.end { " end" } else { "" };
                let open = if e.open { " open" } else { "" };
                format!("{h}{end}{open}")
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
            ["00000000 end", "0a000100", "0a000300 end", "ff000000 open"]
        );
        // Open to the last address: no end element, the open flag as user data, and the
        // missing end counted in the size (nft 1.0.6 --debug=netlink: size 5 for these).
        assert_eq!(touching.size(), 5);
        assert_eq!(touching.elements[3].userdata(), [1, 4, 1, 0, 0, 0]);
        assert!(touching.elements[0].userdata().is_empty());
        let halves = AnonSet::addrs(1, Family::V4, &cidrs(&["0.0.0.0/1", "128.0.0.0/1"]));
        assert_eq!(hex(&halves.elements), ["00000000 open"]);
        assert_eq!(halves.size(), 2);
        let from_zero = AnonSet::addrs(1, Family::V4, &cidrs(&["0.0.0.0/8"]));
        assert_eq!(hex(&from_zero.elements), ["00000000", "01000000 end"]);
        assert_eq!(from_zero.size(), 2);
        // Single addresses only: a hash set of keys, as nft makes `{ 1.2.3.4, 5.6.7.8 }`.
        let hosts = AnonSet::addrs(1, Family::V4, &cidrs(&["1.2.3.4/32", "5.6.7.8/32"]));
        assert!(!hosts.interval);
        assert_eq!(hex(&hosts.elements), ["01020304", "05060708"]);
        assert_eq!(hosts.flags(), 3);
        assert_eq!(hosts.userdata().len(), 28);
        let v6 = AnonSet::addrs(1, Family::V6, &cidrs(&["fd00::/32", "2001:db8::/48"]));
        assert_eq!(v6.elements.len(), 5);
        assert!(v6.elements[0].end);
        let v6_open = AnonSet::addrs(1, Family::V6, &cidrs(&["fd00::/8", "ff00::/8"]));
        assert_eq!(v6_open.elements.len(), 4);
        assert!(v6_open.elements[3].open);
        assert_eq!(v6_open.size(), 5);
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
