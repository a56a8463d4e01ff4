//! Istio's sidecar interception (`istio-iptables`): its flag table (`flags`), the resolution of
//! flags, environment and host facts into what to do and the policy (`config`), its chains and
//! tables (`chains`), its policy (`policy`), the walk of that policy in upstream's order (`walk`) with upstream's nft
//! spellings (`spell`), the plan it builds (`build`), and what upstream prints beyond the
//! rules (`upstream`: the dry-run text, the clean commands, the trace).

mod build;
pub mod chains;
pub mod config;
pub mod flags;
pub mod policy;
pub mod spell;
#[cfg(test)]
pub(crate) mod testing;
pub mod upstream;
mod walk;

pub use build::{build, build_for};
pub use upstream::{dry_run, trace_file};
