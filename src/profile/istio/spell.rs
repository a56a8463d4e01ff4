//! How upstream's nftables generator spells Istio's rules differently from its iptables one:
//! one `NftSpelling` per shape of rule, named once, used by the walk. Only the order and
//! presence of matches differ, never their meaning (one exception: `DROP_INVALID`).

use crate::plan::NftSpelling;

/// `meta l4proto tcp ip daddr != LO tproxy ...`: the protocol before the address.
pub const TPROXY_CAPTURE: NftSpelling = NftSpelling {
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `meta l4proto tcp ct state related,established tcp dport P`: the state before the port.
pub const ESTABLISHED_FIRST: NftSpelling = NftSpelling {
    order: Some(&[0, 2, 1]),
    ..NftSpelling::AS_IPTABLES
};

/// `udp dport 53` where iptables writes `-p udp --dport 53`: the port match implies the
/// protocol (nft adds the `meta l4proto` dependency itself, and so does the lowering).
pub const PORT_IMPLIES_PROTO: NftSpelling = NftSpelling {
    drop_proto: true,
    ..NftSpelling::AS_IPTABLES
};

/// `ip daddr S tcp dport 53`: the resolver before the port, no protocol match.
pub const SERVER_FIRST: NftSpelling = NftSpelling {
    drop_proto: true,
    order: Some(&[1, 0]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp ip daddr != LO ...`: the protocol before the address.
pub const HAIRPIN: NftSpelling = NftSpelling {
    order: Some(&[0, 2, 1, 3, 4]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp mark M` (and `iifname lo meta l4proto tcp mark != 1338`):
/// the interface first.
pub const LOOPBACK_FIRST: NftSpelling = NftSpelling {
    order: Some(&[1, 0, 2]),
    ..NftSpelling::AS_IPTABLES
};

/// `oifname lo meta l4proto tcp ip daddr != LO skuid U`: interface, protocol, address.
pub const OUTBOUND_MARK: NftSpelling = NftSpelling {
    order: Some(&[2, 1, 0, 3]),
    ..NftSpelling::AS_IPTABLES
};

/// `iifname lo meta l4proto tcp ip saddr 127.0.0.6`: the interface first.
pub const PASSTHROUGH_GUARD: NftSpelling = NftSpelling {
    order: Some(&[2, 0, 1]),
    ..NftSpelling::AS_IPTABLES
};

/// Upstream's quirk: its nft `--drop-invalid` rule matches TCP only (its iptables rule
/// matches every protocol). Kept, so both renderings stay byte-identical to upstream.
pub const DROP_INVALID: NftSpelling = NftSpelling {
    prepend_tcp: true,
    ..NftSpelling::AS_IPTABLES
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Cidr, Match, Port, Proto};

    fn m(n: u16) -> Match {
        Match::Dport {
            proto: Proto::Tcp,
            negate: false,
            port: Port::new(n).unwrap(),
        }
    }

    #[test]
    fn every_spelling_keeps_every_match_but_the_implied_protocol() {
        for (s, arity) in [
            (&TPROXY_CAPTURE, 2),
            (&ESTABLISHED_FIRST, 3),
            (&HAIRPIN, 5),
            (&LOOPBACK_FIRST, 3),
            (&OUTBOUND_MARK, 4),
            (&PASSTHROUGH_GUARD, 3),
        ] {
            let given: Vec<Match> = (1..=arity as u16).map(m).collect();
            let mut got = s.apply(given.clone());
            got.sort_by_key(|x| format!("{x:?}"));
            assert_eq!(got.len(), arity, "{s:?}");
            for g in &given {
                assert!(got.contains(g), "{s:?} lost {g:?}");
            }
        }
        let udp = Match::Proto { proto: Proto::Udp };
        let dns = Match::Dport {
            proto: Proto::Udp,
            negate: false,
            port: Port::new(53).unwrap(),
        };
        assert_eq!(
            PORT_IMPLIES_PROTO.apply(vec![udp.clone(), dns.clone()]),
            std::slice::from_ref(&dns)
        );
        // A port of another protocol implies nothing: the protocol match stays.
        assert_eq!(
            PORT_IMPLIES_PROTO.apply(vec![udp.clone(), m(53)]),
            [udp.clone(), m(53)]
        );
        let d = Match::Dst {
            negate: false,
            cidr: Cidr("10.0.0.1/32".parse().unwrap()),
        };
        assert_eq!(
            SERVER_FIRST.apply(vec![udp, dns.clone(), d.clone()]),
            [d, dns]
        );
    }
}
