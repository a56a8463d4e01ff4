//! The in-pod policy: everything Istio ambient's in-pod rules and policy routing depend on
//! and nothing else. Built by `config` from flags, environment and the pod's loopback; walked
//! by `walk` and `build`, which do no I/O.

use std::net::IpAddr;

use serde::Serialize;

use crate::values::{Family, IfName, MaskedMark, Port, RouteTable, RulePriority};

/// ztunnel's listeners in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// Outbound: the pod's TCP (and virtual interfaces' inbound) goes here.
    pub outbound: Port,
    /// Inbound plaintext: inbound TCP goes here.
    pub inbound_plaintext: Port,
    /// HBONE: inbound TCP to it is left alone.
    pub inbound: Port,
    /// The DNS proxy.
    pub dns: Port,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub ports: Ports,
    /// ztunnel's socket mark: its own traffic is never redirected.
    pub ztunnel_mark: MaskedMark,
    /// The connection mark of ztunnel's connections, restored on replies.
    pub connmark: MaskedMark,
    pub route_table: RouteTable,
    pub rule_priority: RulePriority,
    /// The probe source the node SNATs the kubelet's probes to, per family.
    pub probe_v4: IpAddr,
    pub probe_v6: IpAddr,
    /// IPv6 rules are programmed.
    pub ipv6: bool,
    /// IPv6 policy routing is programmed (IPv6 on and the pod's `lo` has IPv6).
    pub ipv6_routing: bool,
    /// DNS is captured (the pod's override, else the node's setting).
    pub dns: bool,
    /// Ingress mode: no inbound capture, no probe exception.
    pub ingress: bool,
    pub virtual_interfaces: Vec<IfName>,
}

impl Policy {
    /// The families rules are programmed for: IPv4 always, IPv6 when on.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The families policy routing is programmed for.
    pub fn routing_families(&self) -> Vec<Family> {
        if self.ipv6_routing {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The probe source of a family.
    pub fn probe(&self, f: Family) -> IpAddr {
        match f {
            Family::V4 => self.probe_v4,
            Family::V6 => self.probe_v6,
        }
    }
}
