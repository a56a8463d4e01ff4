//! A packet tracer over the typed plan: the proof of tests/traffic.rs without root. It walks a
//! packet through one dialect's rules (`ruleset`) as netfilter would, and says where it ends:
//! at its original destination, REDIRECTed to a local port (the original destination kept),
//! TPROXY'd with a mark, dropped; with the marks and conntrack zone it got on the way.
//!
//! What is modelled is what the plan's rules need (after kube-proxy's nftables `tracePacket`):
//! a locally generated packet takes OUTPUT then POSTROUTING, and when it is routed to `lo`
//! (the pod's own address, or after a REDIRECT) comes back in through PREROUTING and INPUT
//! without its socket, its NAT already decided; an arriving packet takes PREROUTING then
//! INPUT. Base chains run in priority order; within one, first match wins, jumps and returns
//! nest, ACCEPT ends the chain (the next base chain still runs), DROP ends all, the policy is
//! accept. nat chains see a connection's first packet only. A CT zone is set only before
//! conntrack (priority -200) and only once (a later one is ignored, as xt_CT and nft_ct do).
//! A mark change in mangle OUTPUT re-routes: the TPROXY mark goes to `lo` (the plan's policy
//! routing). Routing, addresses and interfaces are `net`'s.

mod matching;
mod ruleset;
mod walk;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use meshtables::plan::{Family, MarkRule, Plan, Proto};

pub use matching::Conn;
pub use ruleset::Ruleset;
pub use walk::trace;

use super::net;
use super::scenarios::{Dialect, From, Probe};

/// Where the packet comes from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A socket of the pod owned by uid, gid.
    Local { uid: u32, gid: u32 },
    /// Arrived on a pod interface from `src`.
    Arriving { iface: &'static str, src: IpAddr },
}

/// The packet to trace.
#[derive(Debug, Clone)]
pub struct Packet {
    pub origin: Origin,
    pub proto: Proto,
    pub dst: SocketAddr,
    pub sport: u16,
    pub conn: Conn,
    pub mark: u32,
    pub connmark: u32,
}

/// A client's ephemeral port.
const EPHEMERAL: u16 = 40000;

impl Packet {
    /// The first packet of a scenario's flow.
    pub fn of(p: &Probe) -> Packet {
        let origin = match p.from {
            From::Pod(user) => {
                let (u, g) = user.split_once(':').expect("uid:gid");
                Origin::Local {
                    uid: u.parse().expect("a uid"),
                    gid: g.parse().expect("a gid"),
                }
            }
            From::World => {
                let (link, src) = net::client_of(p.dst);
                Origin::Arriving {
                    iface: link.pod_if,
                    src,
                }
            }
        };
        Packet {
            origin,
            proto: p.proto,
            dst: p.to(),
            sport: EPHEMERAL,
            conn: Conn::New,
            mark: 0,
            connmark: 0,
        }
    }
}

/// Where a packet ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reached the address it was sent to: left the pod, or was delivered to its socket there.
    Accepted {
        to: SocketAddr,
    },
    /// REDIRECT: delivered to `to` (127.0.0.1 / ::1 from OUTPUT, the arriving interface's
    /// address from PREROUTING); conntrack remembers `orig`.
    Redirected {
        to: SocketAddr,
        orig: SocketAddr,
    },
    /// TPROXY: delivered to the socket on `port`, marked `mark`, addressed as `orig`.
    Tproxied {
        port: u16,
        mark: u32,
        orig: SocketAddr,
    },
    Dropped {
        by: String,
    },
    /// Arrived for an address that is not the pod's, and no mark routes it locally: the pod
    /// does not forward.
    NotLocal {
        to: SocketAddr,
    },
}

/// A traced packet: where it ended, what it carried, and every rule that matched on the way.
#[derive(Debug, Clone)]
pub struct Trace {
    pub verdict: Verdict,
    pub mark: u32,
    pub connmark: u32,
    pub zone: Option<u16>,
    pub path: Vec<String>,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?} (mark {}, connmark {}, zone {:?})",
            self.verdict, self.mark, self.connmark, self.zone
        )?;
        for step in &self.path {
            writeln!(f, "  {step}")?;
        }
        Ok(())
    }
}

/// The rule by whose mark the plan's policy routing delivers packets locally, for `family`.
pub fn local_mark(plan: &Plan, family: Family) -> Option<MarkRule> {
    plan.routes
        .as_ref()
        .filter(|r| r.families.contains(&family))
        .map(|r| r.rule)
}

/// Traces `packet` through `plan` as `dialect` installs it.
pub fn trace_plan(plan: &Plan, dialect: Dialect, packet: &Packet) -> Result<Trace, String> {
    let family = net::family(packet.dst.ip());
    let rules = match dialect {
        Dialect::Xtables => Ruleset::xtables(plan.xtables.rules(family))?,
        Dialect::Nft => Ruleset::nft(&plan.nft)?,
    };
    trace(&rules, dialect, local_mark(plan, family), packet)
}

/// The plan meshtables builds for `args` in the pod of `net` (its addresses, the tests'
/// /etc/group and /etc/passwd).
pub fn plan(args: &[&str]) -> Result<Plan, String> {
    let argv = std::iter::once("meshtables")
        .chain(args.iter().copied())
        .map(std::ffi::OsString::from)
        .collect();
    let host = super::FakeHost {
        addrs: net::pod_addrs(),
        files: [
            ("/etc/group".to_string(), super::GROUP_FILE.to_string()),
            ("/etc/passwd".to_string(), super::PASSWD_FILE.to_string()),
        ]
        .into(),
    };
    let r = meshtables::cmd::resolve_args(argv, &std::collections::HashMap::new(), &host)?;
    Ok(meshtables::profile::istio::build(&r.policy))
}
