//! Pure renderers: a `Plan` in, text out. Nothing here touches the machine.
//!
//! - `iptables`: `iptables-restore` input per family, byte-identical to upstream's;
//! - `nft`: the `nft -f` transaction upstream's nftables mode produces;
//! - `trace`: upstream's dry-run trace (what its dependency stub records).

pub mod iptables;
pub mod nft;
pub mod trace;
