//! Istio ambient's in-pod chains and tables, named as upstream names them in each dialect
//! (`ISTIO_PRERT`/`istio-prerouting`, `ISTIO_OUTPUT`/`istio-output`; tables `inet
//! istio-ambient-nat|mangle|raw`), in the order its nftables generator declares them, with
//! its hooks and priorities: the scheme's declarative chain table.

use crate::plan::builtin::{OUTPUT, PREROUTING};
use crate::plan::{BaseChain, Chain, ChainType, Hook, Scheme, Table, TableLayout, XtChains};

/// The ambient scheme: three `inet` tables, and in iptables exactly two chain names in
/// mangle, nat and raw (the sidecar's `ISTIO_` prefix would claim the sidecar's chains too).
pub static SCHEME: Scheme = Scheme {
    name: "ambient",
    tables: &[NAT, MANGLE, RAW],
    xt_chains: XtChains::Named(&["ISTIO_PRERT", "ISTIO_OUTPUT"]),
    fail_closed: true,
};

const fn base(kind: ChainType, hook: Hook, priority: i32) -> BaseChain {
    BaseChain {
        kind,
        hook,
        priority,
    }
}

/// nat at priority -100 (knftables' DNATPriority) for both hooks.
const NAT: TableLayout = TableLayout {
    table: Table::Nat,
    nft_name: "istio-ambient-nat",
    chains: &[PREROUTING, OUTPUT, ISTIO_PRERT, ISTIO_OUTPUT],
    base: &[
        (PREROUTING, base(ChainType::Nat, Hook::Prerouting, -100)),
        (OUTPUT, base(ChainType::Nat, Hook::Output, -100)),
    ],
};

/// mangle at -150, its output chain of type `route` (a restored mark reroutes the reply).
const MANGLE: TableLayout = TableLayout {
    table: Table::Mangle,
    nft_name: "istio-ambient-mangle",
    chains: &[PREROUTING, OUTPUT, ISTIO_PRERT, ISTIO_OUTPUT],
    base: &[
        (PREROUTING, base(ChainType::Filter, Hook::Prerouting, -150)),
        (OUTPUT, base(ChainType::Route, Hook::Output, -150)),
    ],
};

/// raw at -300 (before conntrack: the DNS zones).
const RAW: TableLayout = TableLayout {
    table: Table::Raw,
    nft_name: "istio-ambient-raw",
    chains: &[PREROUTING, OUTPUT, ISTIO_PRERT, ISTIO_OUTPUT],
    base: &[
        (PREROUTING, base(ChainType::Filter, Hook::Prerouting, -300)),
        (OUTPUT, base(ChainType::Filter, Hook::Output, -300)),
    ],
};

pub const ISTIO_PRERT: Chain = Chain::scheme("ISTIO_PRERT", "istio-prerouting");
pub const ISTIO_OUTPUT: Chain = Chain::scheme("ISTIO_OUTPUT", "istio-output");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_exactly_its_two_chains() {
        assert!(SCHEME.owns_xt_chain("ISTIO_PRERT") && SCHEME.owns_xt_chain("ISTIO_OUTPUT"));
        for other in [
            "ISTIO_INBOUND",
            "ISTIO_POSTRT",
            "ISTIO_OUTPUT_DNS",
            "PREROUTING",
        ] {
            assert!(!SCHEME.owns_xt_chain(other), "{other}");
        }
    }
}
