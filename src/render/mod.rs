//! Pure renderers: a `Plan` in, text out, for any scheme. Nothing here touches the machine.
//!
//! - `iptables`: `iptables-restore` input per family, byte-identical to upstream's;
//! - `nft`: the `nft -f` transaction upstream's nftables mode produces, which is also an exact
//!   picture of the netlink batch;
//! - `json`: the plan as JSON.
//!
//! What a scheme's `--dry-run` prints around them (Istio's: `profile::istio::upstream`) is the
//! scheme's.

pub mod iptables;
pub mod nft;

use crate::plan::Plan;

/// The plan as JSON (`--output json`).
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
    s.push('\n');
    s
}
