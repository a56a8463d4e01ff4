//! Backends: they consume a `Plan` and change the machine.
//!
//! - `netlink`: native nftables in one netlink transaction (nftnl + mnl), TPROXY routing over
//!   rtnetlink.

pub mod netlink;
