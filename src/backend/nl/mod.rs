//! The kernel layer: what both backends (and the TPROXY routing) need to talk to the kernel
//! over netlink, knowing no plan's scheme.
//!
//! - `transport`: one netlink socket (nfnetlink or rtnetlink), requests, dumps, acks;
//! - `wire`: nf_tables messages encoded and parsed in Rust (netlink-packet-netfilter, plus the
//!   attributes it lacks, by their C names);
//! - `batch`: a transaction written message by message into one buffer;
//! - `expr`: expression builders as `nft` builds them;
//! - `sets`: anonymous sets and their elements as `nft` 1.0.6 writes them;
//! - `session`: an nfnetlink connection: dumps, the generation, commit and the kernel's
//!   verdict;
//! - `guard`: the fail-closed guard table of multi-commit iptables changes;
//! - `probe`: iptables detection's nat question, leaving nothing behind.

pub mod batch;
pub mod expr;
pub mod guard;
pub mod ipset;
pub mod probe;
pub mod session;
pub mod sets;
pub mod transport;
pub mod wire;

/// The loopback interface's index, the same in every network namespace (the kernel's
/// `LOOPBACK_IFINDEX`; libc has no name for it).
pub const LO_INDEX: u32 = 1;
