//! The node's policy, its scheme (upstream's names: iptables chain `ISTIO_POSTRT` jumped to
//! from nat `POSTROUTING`; nftables base chain `postrouting` at srcnat priority 100 in `inet
//! istio-ambient-nat`, which also holds the probe sets) and `Policy → Plan`. Pure: no I/O.
//!
//! Upstream's two generators key on different things, so each dialect is walked on its own:
//! iptables SNATs TCP of any local socket (`-m owner --socket-exists`) to a member of the
//! family's ipset; nftables TCP of the kubelet's uid (`skuid`), as nft has no socket-exists.

use std::net::IpAddr;

use serde::Serialize;

use crate::plan::builtin::POSTROUTING;
use crate::plan::{
    AddrSet, BaseChain, Chain, ChainType, Dialects, Family, Hook, Match, Nft, Ownership, Plan,
    Proto, Scheme, Sink, Table, TableLayout, Target, Uid, XtChains, Xtables, rule,
};

/// Upstream's set name prefix (`config.ProbeIPSet`) and each family's set.
pub const PROBE_SET_V4: &str = "istio-inpod-probes-v4";
pub const PROBE_SET_V6: &str = "istio-inpod-probes-v6";
/// The comment upstream's nftables sets carry.
const SET_COMMENT: &str = "UUID of the pods that are part of ambient mesh";

/// The host's scheme: one `inet` table, one iptables chain.
pub static SCHEME: Scheme = Scheme {
    name: "ambient-host",
    tables: &[NAT],
    xt_chains: XtChains::Named(&["ISTIO_POSTRT"]),
    // The node's namespace: never the guard (see `Scheme::fail_closed`).
    fail_closed: false,
};

/// nat with its postrouting base chain at knftables' SNATPriority (100).
const NAT: TableLayout = TableLayout {
    table: Table::Nat,
    nft_name: "istio-ambient-nat",
    chains: &[POSTROUTING],
    base: &[(
        POSTROUTING,
        BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Postrouting,
            priority: 100,
        },
    )],
};

/// The iptables chain the node's rule lives in (nftables puts it in the base chain).
pub const ISTIO_POSTRT: Chain = Chain::scheme("ISTIO_POSTRT", "istio-postrouting");

/// Everything the node's rules depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub probe_v4: IpAddr,
    pub probe_v6: IpAddr,
    pub ipv6: bool,
    /// The kubelet's uid, which the nftables rule keys on; `None` when no nftables rule is
    /// needed (the iptables backend), and then the nftables dialect is empty.
    pub kubelet_uid: Option<Uid>,
}

impl Policy {
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    fn probe(&self, f: Family) -> IpAddr {
        match f {
            Family::V4 => self.probe_v4,
            Family::V6 => self.probe_v6,
        }
    }
}

/// The probe set of a family.
pub fn probe_set(f: Family) -> AddrSet {
    AddrSet {
        name: match f {
            Family::V4 => PROBE_SET_V4,
            Family::V6 => PROBE_SET_V6,
        },
        family: f,
        comment: SET_COMMENT,
    }
}

/// The plan in the dialects asked for.
pub fn build_for(p: &Policy, dialects: Dialects) -> Plan {
    let mut xt = Xtables::new(p.ipv6);
    if dialects.xtables {
        // `-I POSTROUTING 1 -j ISTIO_POSTRT`, then per family the SNAT rule.
        let jump = rule(
            Table::Nat,
            POSTROUTING,
            vec![],
            Target::Jump {
                chain: ISTIO_POSTRT,
            },
        );
        for f in p.families() {
            xt.family(f, jump.clone().insert(0));
            let m = vec![
                Match::SocketExists,
                Match::Proto { proto: Proto::Tcp },
                Match::DstInSet { set: probe_set(f) },
            ];
            let snat = Target::Snat { to: p.probe(f) };
            xt.family(f, rule(Table::Nat, ISTIO_POSTRT, m, snat));
        }
    }
    let mut nft = Nft::new(p.ipv6, &SCHEME);
    if let (true, Some(uid)) = (dialects.nft, p.kubelet_uid) {
        for f in p.families() {
            let m = vec![
                Match::Proto { proto: Proto::Tcp },
                Match::Uid { negate: false, uid },
                Match::DstInSet { set: probe_set(f) },
            ];
            let snat = Target::Snat { to: p.probe(f) };
            nft.family(f, rule(Table::Nat, POSTROUTING, m, snat));
        }
    }
    Plan {
        xtables: xt.finish(),
        nft: nft.finish(),
        routes: None,
        loopback_v6_address: false,
        sets: p.families().into_iter().map(probe_set).collect(),
        ours: Ownership {
            scheme: &SCHEME,
            marks: Vec::new(),
            rule: None,
            loopback_v6: false,
            sets: Family::BOTH.into_iter().map(probe_set).collect(),
        },
    }
}
