//! Backends: they consume a `Plan` and change the machine.
//!
//! - `netlink`: native nftables in one netlink transaction (nftnl + mnl), TPROXY routing over
//!   rtnetlink.
//! - `iptables`: the iptables binaries (`*-restore`/`*-save`), with upstream's detection.

pub mod iptables;
pub mod netlink;
