//! Istio's chains and tables, named as upstream names them in each dialect, in upstream's
//! order (docs/upstream.md, "The nftables text"): the scheme's declarative chain table.

use crate::plan::builtin::{OUTPUT, PREROUTING};
use crate::plan::{BaseChain, Chain, ChainType, Hook, Scheme, Table, TableLayout, XtChains};

/// Istio's sidecar scheme: three `inet` tables, `ISTIO_` chains.
pub static SCHEME: Scheme = Scheme {
    name: "istio",
    tables: &[NAT, MANGLE, RAW],
    xt_chains: XtChains::Prefix("ISTIO_"),
    fail_closed: true,
};

const fn base(kind: ChainType, hook: Hook, priority: i32) -> BaseChain {
    BaseChain {
        kind,
        hook,
        priority,
    }
}

/// nat at priority -100.
const NAT: TableLayout = TableLayout {
    table: Table::Nat,
    nft_name: "istio-proxy-nat",
    chains: &[
        PREROUTING,
        OUTPUT,
        ISTIO_INBOUND,
        ISTIO_REDIRECT,
        ISTIO_IN_REDIRECT,
        ISTIO_OUTPUT,
        ISTIO_OUTPUT_DNS,
    ],
    base: &[
        (PREROUTING, base(ChainType::Nat, Hook::Prerouting, -100)),
        (OUTPUT, base(ChainType::Nat, Hook::Output, -100)),
    ],
};

/// mangle at -150, its output chain of type `route` (a changed mark reroutes).
const MANGLE: TableLayout = TableLayout {
    table: Table::Mangle,
    nft_name: "istio-proxy-mangle",
    chains: &[
        PREROUTING,
        OUTPUT,
        ISTIO_DIVERT,
        ISTIO_TPROXY,
        ISTIO_INBOUND,
        ISTIO_DROP,
    ],
    base: &[
        (PREROUTING, base(ChainType::Filter, Hook::Prerouting, -150)),
        (OUTPUT, base(ChainType::Route, Hook::Output, -150)),
    ],
};

/// raw at -300.
const RAW: TableLayout = TableLayout {
    table: Table::Raw,
    nft_name: "istio-proxy-raw",
    chains: &[PREROUTING, OUTPUT, ISTIO_INBOUND, ISTIO_OUTPUT_DNS],
    base: &[
        (PREROUTING, base(ChainType::Filter, Hook::Prerouting, -300)),
        (OUTPUT, base(ChainType::Filter, Hook::Output, -300)),
    ],
};

pub const ISTIO_INBOUND: Chain = Chain::scheme("ISTIO_INBOUND", "istio-inbound");
pub const ISTIO_REDIRECT: Chain = Chain::scheme("ISTIO_REDIRECT", "istio-redirect");
pub const ISTIO_IN_REDIRECT: Chain = Chain::scheme("ISTIO_IN_REDIRECT", "istio-in-redirect");
pub const ISTIO_OUTPUT: Chain = Chain::scheme("ISTIO_OUTPUT", "istio-output");
pub const ISTIO_OUTPUT_DNS: Chain = Chain::scheme("ISTIO_OUTPUT_DNS", "istio-output-dns");
pub const ISTIO_DIVERT: Chain = Chain::scheme("ISTIO_DIVERT", "istio-divert");
pub const ISTIO_TPROXY: Chain = Chain::scheme("ISTIO_TPROXY", "istio-tproxy");
pub const ISTIO_DROP: Chain = Chain::scheme("ISTIO_DROP", "istio-drop");
