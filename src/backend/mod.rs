//! Backends consume a `Plan` and change the machine. They are siblings behind one trait,
//! chosen in one place (`dispatch::chosen`), and what to do was decided before
//! (`options::Action`):
//!
//! - `netlink`: native nftables in one netlink transaction (the plan lowered to nf_tables
//!   messages encoded in Rust, one transport);
//! - `iptables`: the iptables binaries (`*-restore`/`*-save`), with upstream's detection;
//! - `routes`: TPROXY policy routing over rtnetlink, which both need; `run` orders it around
//!   the rules;
//! - `dispatch`: the one place that picks backends and orders routing around them;
//! - `nl`: the kernel layer both backends and the routing share (the netlink transport, the
//!   nf_tables wire encoding, the batch, expression builders, the fail-closed guard, the nat
//!   probe); no backend imports another.
//!
//! An apply and a check use the chosen backend; a clean uses every backend, whatever the
//! flags chose, because it removes everything of ours that any earlier run left.

pub mod api;
pub mod dispatch;
pub mod iptables;
pub mod netlink;
pub mod nl;
pub mod routes;

pub use api::{Backend, BackendError};
