//! The rule plan: what meshtables will install, as typed data and nothing else.
//!
//! `build(&Policy) -> Plan` is pure: host facts were read before (`config`). The policy is
//! walked once (`walk`), in upstream's order, into two dialects, because upstream generates
//! its two pictures of the policy with two programs that differ in small, enumerated ways:
//! `xtables` (per-family rule lists, rendered as `iptables-restore` input) and `nft` (three
//! `inet` tables, rendered as an `nft -f` transaction and lowered to netlink). Matches and
//! targets are enums; only renderers know how `-m owner --uid-owner` or `skuid` is spelled.
//! Every value is a validated newtype, so nothing that reaches rendered text can carry a
//! space, a newline or a quote.
//!
//! Module graph (no cycles): `build` → `walk`, `xtables`, `nft`, `types`; `walk` → `nft` (its
//! named spellings), `rule`, `types`; `xtables`, `nft` → `rule`, `types`; `rule` → `types`;
//! `types` is a leaf (values only). This module only re-exports.

mod build;
mod nft;
mod rule;
#[cfg(test)]
pub(crate) mod testing;
mod types;
mod walk;
mod xtables;

pub use crate::values::{Cidr, DisplayV6, Family, Group, IfName, Mark, Port, RouteTable, Uid};
pub use build::{Dialects, build, build_for};
pub use types::*;
