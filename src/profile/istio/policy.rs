//! The interception policy: everything the rules depend on and nothing else (not how to run:
//! that is `options::RunOptions`). Built by `config` from flags, environment and host facts,
//! which are read before; consumed by `build`, which does no I/O.

use std::net::IpAddr;

use serde::Serialize;

use crate::values::{
    Cidr, Cidrs, Family, Group, IfName, InboundPorts, InterceptMode, Mark, OwnerGroups, Port,
    RouteTable, Uid,
};

/// DNS capture, decided once by config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dns {
    Off,
    /// `--capture-all-dns`: every port-53 flow.
    All,
    /// Flows to these resolvers (at least one address in one family).
    Servers {
        v4: Vec<IpAddr>,
        v6: Vec<IpAddr>,
    },
}

impl Dns {
    /// The resolvers of one family (none for `All` and `Off`).
    pub fn servers(&self, f: Family) -> Vec<Cidr> {
        match self {
            Dns::Servers { v4, v6 } => match f {
                Family::V4 => v4,
                Family::V6 => v6,
            }
            .iter()
            .map(|a| Cidr::host(*a))
            .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub proxy_port: Port,
    pub inbound_capture_port: Port,
    pub inbound_tunnel_port: Port,
    pub proxy_uids: Vec<Uid>,
    /// Numeric unless this is a dry run (config resolves names before any backend).
    pub proxy_gids: Vec<Group>,
    pub mode: InterceptMode,
    pub inbound_ports: InboundPorts,
    pub local_exclude_ports: Vec<Port>,
    pub exclude_interfaces: Vec<IfName>,
    pub kube_virt_interfaces: Vec<IfName>,
    pub outbound_include: Cidrs,
    pub outbound_exclude: Cidrs,
    pub outbound_ports_include: Vec<Port>,
    pub outbound_ports_exclude: Vec<Port>,
    pub tproxy_mark: Mark,
    pub tproxy_route_table: RouteTable,
    pub drop_invalid: bool,
    /// Whether IPv6 rules are programmed.
    pub ipv6: bool,
    pub dns: Dns,
    pub owner_groups_include: OwnerGroups,
    pub owner_groups_exclude: Vec<Group>,
    pub ipv4_loopback_cidr: Cidr,
    /// `--compact`: each port or CIDR list is one rule with a list match, which each dialect
    /// spells its way (an nftables set; iptables multiport chunks, one rule per CIDR).
    pub compact: bool,
}

impl Policy {
    pub fn tproxy(&self) -> bool {
        self.mode == InterceptMode::Tproxy
    }
    /// The families rules are programmed for: IPv4 always, IPv6 when on.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
    /// The "loopback destination" of a family: the configurable IPv4 CIDR or `::1/128`.
    pub fn lo_dst(&self, f: Family) -> Cidr {
        match f {
            Family::V4 => self.ipv4_loopback_cidr,
            Family::V6 => Cidr::v6_loopback(),
        }
    }
    /// The proxy's identities: uids, then gids (upstream's order).
    pub fn owners(&self) -> Vec<Owner> {
        self.proxy_uids
            .iter()
            .map(|u| Owner::Uid(*u))
            .chain(self.proxy_gids.iter().cloned().map(Owner::Gid))
            .collect()
    }
}

/// One identity of the proxy: a uid or a gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Uid(Uid),
    Gid(Group),
}
