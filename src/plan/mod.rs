//! The rule plan: what meshtables will install, as typed data and nothing else, for any
//! scheme.
//!
//! A scheme (`profile`) walks its policy once, in its upstream's order, and sends each rule to
//! both dialects, because upstream generates its two pictures of the policy with two programs
//! that differ in small, enumerated ways: `xtables` (per-family rule lists, rendered as
//! `iptables-restore` input) and `nft` (a scheme's `inet` tables, rendered as an `nft -f`
//! transaction and lowered to netlink). Matches and targets are enums; only renderers know how
//! `-m owner --uid-owner` or `skuid` is spelled. Every value is a validated newtype, so nothing
//! that reaches rendered text can carry a space, a newline or a quote. Every plan carries its
//! scheme's ownership (`Ownership`): what in a namespace is ours.
//!
//! Module graph (no cycles): `xtables`, `nft` → `rule`, `types`; `rule` → `types`; `build`
//! and `types` are leaves (values only). This module only re-exports.

mod build;
mod nft;
mod rule;
mod types;
mod xtables;

pub use crate::values::{
    Cidr, DisplayV6, Family, Group, IfName, Mark, MaskedMark, Port, RouteTable, RulePriority, Uid,
};
pub use build::Dialects;
pub use nft::Nft;
pub use rule::{At, NftSpelling, Rule, Sink, rule};
pub use types::*;
pub use xtables::Xtables;
