//! Which dialects a plan is built in (a scheme's build, e.g. `profile::istio::build`, walks its
//! policy once into each asked for).

/// Which dialects a plan holds. A run that only programs netlink does not need the iptables
/// rules (with thousands of CIDRs, they are a megabyte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialects {
    pub xtables: bool,
    pub nft: bool,
}

impl Dialects {
    pub const BOTH: Dialects = Dialects {
        xtables: true,
        nft: true,
    };
}
