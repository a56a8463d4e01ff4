//! `Config → Plan`: pure, no I/O. The xtables and nftables rule lists are built by two
//! functions (`xtables::build`, `nft::build`) that follow upstream's two generators step by
//! step; this module holds what they share: the decisions derived from the config and the
//! small constructors for matches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::config::{Config, InterceptMode};

/// Decisions both generators make the same way.
pub(super) struct Derived<'a> {
    pub cfg: &'a Config,
    pub tproxy: bool,
    /// Upstream turns DNS capture off (with a warning) when there is nothing to capture:
    /// no capture-all and no resolver address.
    pub dns: bool,
}

impl<'a> Derived<'a> {
    pub fn new(cfg: &'a Config) -> Self {
        let dns = cfg.redirect_dns
            && (cfg.capture_all_dns
                || !cfg.dns_servers_v4.is_empty()
                || !cfg.dns_servers_v6.is_empty());
        Derived {
            cfg,
            tproxy: cfg.mode == InterceptMode::Tproxy,
            dns,
        }
    }

    /// The "loopback destination" of each family: the configurable IPv4 CIDR or `::1/128`.
    pub fn lo_dst(&self, f: Family) -> Cidr {
        match f {
            Family::V4 => self.cfg.ipv4_loopback_cidr,
            Family::V6 => Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        }
    }
}

/// The source address Envoy binds for inbound passthrough (127.0.0.6 / ::6).
pub(super) fn passthrough_src(f: Family) -> Cidr {
    match f {
        Family::V4 => Cidr::host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))),
        Family::V6 => Cidr::host(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))),
    }
}

pub(super) fn lo() -> Name {
    Name::parse("lo", 15).expect("lo is a valid name")
}
pub(super) fn tcp() -> Match {
    Match::Proto { proto: Proto::Tcp }
}
pub(super) fn iif(n: &Name) -> Match {
    Match::InIface { name: n.clone() }
}
pub(super) fn oif(n: &Name) -> Match {
    Match::OutIface { name: n.clone() }
}
pub(super) fn dst(c: Cidr) -> Match {
    Match::Dst {
        negate: false,
        cidr: c,
    }
}
pub(super) fn not_dst(c: Cidr) -> Match {
    Match::Dst {
        negate: true,
        cidr: c,
    }
}
pub(super) fn src(c: Cidr) -> Match {
    Match::Src {
        negate: false,
        cidr: c,
    }
}
pub(super) fn dport(proto: Proto, port: Port) -> Match {
    Match::Dport {
        proto,
        negate: false,
        port,
    }
}
pub(super) fn not_dport(proto: Proto, port: Port) -> Match {
    Match::Dport {
        proto,
        negate: true,
        port,
    }
}
pub(super) fn sport(proto: Proto, port: Port) -> Match {
    Match::Sport {
        proto,
        negate: false,
        port,
    }
}
pub(super) fn uid(u: Uid, negate: bool) -> Match {
    Match::Uid { negate, uid: u }
}
pub(super) fn gid(g: &Group, negate: bool) -> Match {
    Match::Gid {
        negate,
        gid: g.clone(),
    }
}
pub(super) fn mark(m: Mark, negate: bool) -> Match {
    Match::Mark { negate, mark: m }
}
pub(super) fn jump(c: Chain) -> Target {
    Target::Jump { chain: c }
}

/// An owner: the proxy's uids and gids are handled by the same three rules each.
#[derive(Clone)]
pub(super) enum Owner {
    Uid(Uid),
    Gid(Group),
}

impl Owner {
    pub fn matcher(&self, negate: bool) -> Match {
        match self {
            Owner::Uid(u) => uid(*u, negate),
            Owner::Gid(g) => gid(g, negate),
        }
    }
    pub fn is_uid(&self) -> bool {
        matches!(self, Owner::Uid(_))
    }
}

pub(super) fn owners(cfg: &Config) -> Vec<Owner> {
    cfg.proxy_uids
        .iter()
        .map(|u| Owner::Uid(*u))
        .chain(cfg.proxy_gids.iter().cloned().map(Owner::Gid))
        .collect()
}

/// Build the whole plan for `cfg`.
pub fn build(cfg: &Config) -> Plan {
    let d = Derived::new(cfg);
    let families = if cfg.enable_ipv6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    };
    // TPROXY needs policy routing only when something is captured inbound.
    let routes = (d.tproxy && !cfg.inbound_ports.is_empty()).then(|| TproxyRoutes {
        mark: cfg.tproxy_mark,
        table: cfg.tproxy_route_table,
        families: families.clone(),
    });
    Plan {
        xtables: super::xtables::build(&d),
        nft: super::nft::build(&d),
        routes,
        loopback_v6_address: cfg.enable_ipv6,
    }
}
