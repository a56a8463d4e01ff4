//! The pod and its world as data: the links (pod interface, world interface, their addresses),
//! the "remote" addresses the world holds on its loopback and the pod's routes. `topo` builds
//! network namespaces from it, the tracer routes packets by it, and the scenarios ask it who
//! owns an address, so the kernel trials and the tracer see one topology.

use std::net::IpAddr;

use ipnet::IpNet;
use meshtables::plan::Family;

/// A veth pair between the pod and the world.
pub struct Link {
    pub pod_if: &'static str,
    pub world_if: &'static str,
    /// The pod's addresses on it (the first of each family is the interface's primary one).
    pub pod: &'static [&'static str],
    /// The world's addresses on it, in the pod's subnets.
    pub world: &'static [&'static str],
}

pub const LINKS: [Link; 2] = [
    Link {
        pod_if: "eth0",
        world_if: "w0",
        pod: &["10.244.1.5/24", "fd00:244::5/64"],
        world: &["10.244.1.1/24", "fd00:244::1/64"],
    },
    Link {
        pod_if: "eth1",
        world_if: "w1",
        pod: &["10.245.0.5/24"],
        world: &["10.245.0.1/24"],
    },
];

/// Servers "far away": addresses on the world's loopback.
pub const REMOTES: [&str; 4] = ["10.96.0.10", "192.0.2.7", "198.51.100.7", "2001:db8::7"];

/// The pod's routes besides its connected subnets: destination and gateway.
pub const ROUTES: [(&str, &str); 3] = [
    ("0.0.0.0/0", "10.244.1.1"),
    ("198.51.100.7/32", "10.245.0.1"),
    ("::/0", "fd00:244::1"),
];

/// The family of an address.
pub fn family(addr: IpAddr) -> Family {
    if addr.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    }
}

pub fn net(cidr: &str) -> IpNet {
    cidr.parse()
        .unwrap_or_else(|_| panic!("{cidr}: not a CIDR"))
}

pub fn ip(addr: &str) -> IpAddr {
    addr.parse()
        .unwrap_or_else(|_| panic!("{addr}: not an address"))
}

/// Whether `addr` is one of the pod's own addresses (loopback included).
pub fn pod_owns(addr: IpAddr) -> bool {
    addr.is_loopback()
        || LINKS
            .iter()
            .flat_map(|l| l.pod)
            .any(|c| net(c).addr() == addr)
}

/// Every address of the pod, as `getifaddrs` lists them in a namespace: IPv4 first (lo, then
/// the links), then IPv6.
pub fn pod_addrs() -> Vec<IpAddr> {
    let links = LINKS.iter().flat_map(|l| l.pod).map(|c| net(c).addr());
    let mut all: Vec<IpAddr> = [ip("127.0.0.1"), ip("::1")]
        .into_iter()
        .chain(links)
        .collect();
    all.sort_by_key(|a| a.is_ipv6());
    all
}

/// The link a world client reaches `pod_addr` over, and the client's address on it.
pub fn client_of(pod_addr: IpAddr) -> (&'static Link, IpAddr) {
    LINKS
        .iter()
        .find_map(|l| {
            l.pod.iter().find(|c| net(c).contains(&pod_addr))?;
            let client = l
                .world
                .iter()
                .map(|c| net(c))
                .find(|w| w.contains(&pod_addr))?;
            Some((l, client.addr()))
        })
        .unwrap_or_else(|| panic!("no link of the pod holds {pod_addr}"))
}

/// The interface the pod sends a packet for `dst` out of (`lo` for its own addresses), by
/// longest prefix over its connected subnets and `ROUTES`, and the source address it picks.
pub fn route(dst: IpAddr) -> Option<(&'static str, IpAddr)> {
    if pod_owns(dst) {
        return Some(("lo", dst));
    }
    let connected = LINKS
        .iter()
        .flat_map(|l| l.pod.iter().map(move |c| (net(c).trunc(), l)));
    let via = ROUTES.iter().filter_map(|(to, gw)| {
        let gw = ip(gw);
        let link = LINKS
            .iter()
            .find(|l| l.pod.iter().any(|c| net(c).contains(&gw)))?;
        Some((net(to), link))
    });
    let (_, link) = connected
        .chain(via)
        .filter(|(n, _)| n.contains(&dst))
        .max_by_key(|(n, _)| n.prefix_len())?;
    let src = primary(link.pod_if, dst.is_ipv6())?;
    Some((link.pod_if, src))
}

/// The first address of interface `name` in one family (`lo`: the loopback address).
pub fn primary(name: &str, v6: bool) -> Option<IpAddr> {
    if name == "lo" {
        return Some(ip(if v6 { "::1" } else { "127.0.0.1" }));
    }
    LINKS
        .iter()
        .filter(|l| l.pod_if == name)
        .flat_map(|l| l.pod)
        .map(|c| net(c).addr())
        .find(|a| a.is_ipv6() == v6)
}
