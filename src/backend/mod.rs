//! Backends consume a `Plan` and change the machine. They are siblings behind one trait,
//! chosen in one place (`chosen`), and what to do was decided before (`config::Action`):
//!
//! - `netlink`: native nftables in one netlink transaction (nftnl lowering, one transport);
//! - `iptables`: the iptables binaries (`*-restore`/`*-save`), with upstream's detection;
//! - `routes`: TPROXY policy routing over rtnetlink, which both need; `run` orders it around
//!   the rules.
//!
//! An apply and a check use the chosen backend; a clean uses every backend, whatever the
//! flags chose, because it removes everything of ours that any earlier run left.

pub mod iptables;
pub mod netlink;
pub mod routes;

use crate::config::{BackendChoice, RunOptions, Verb};
use crate::logging;
use crate::plan::Plan;

/// What a backend failure was.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Iptables(#[from] iptables::IptError),
    #[error("TPROXY routing: {0}")]
    Routes(#[from] routes::RouteError),
    #[error("TPROXY routing is not in place: {}", .0.join("; "))]
    RoutesNotInPlace(Vec<String>),
    #[error("clean left things behind: {}", .0.join("; "))]
    Clean(Vec<String>),
}

/// One way of putting rules into the kernel.
pub trait Backend {
    /// Installs the plan's rules (replacing ours, as the backend's rerun rules say); returns
    /// what it did, for the log.
    fn apply(&self, plan: &Plan) -> Result<String, BackendError>;
    /// Succeeds when the live rules are exactly the plan's.
    fn check(&self, plan: &Plan) -> Result<(), BackendError>;
    /// Removes every rule of ours this backend can see; returns what it removed.
    fn clean(&self, plan: &Plan) -> Result<Vec<String>, BackendError>;
}

/// The backend the options choose.
pub fn chosen(run: &RunOptions) -> Box<dyn Backend> {
    match run.backend {
        BackendChoice::Netlink => Box::new(netlink::Netlink),
        BackendChoice::Iptables(variant) => Box::new(iptables::Iptables::new(run, variant)),
    }
}

/// Carries out `verb` for `plan`. Policy routing goes in before the rules that send packets
/// to it and comes out after them, so no intermediate state marks packets that then have
/// nowhere to go.
pub fn run(verb: Verb, plan: &Plan, opts: &RunOptions) -> Result<(), BackendError> {
    // Every backend and the routing need it: say what to add before anything is tried.
    netlink::check_capability()?;
    match verb {
        Verb::Apply => {
            let added = routes::apply(plan)?;
            let done = chosen(opts).apply(plan)?;
            logging::info(&format!("{done}; {added} routing objects added"));
        }
        Verb::Check => {
            chosen(opts).check(plan)?;
            let missing = routes::missing(plan)?;
            if !missing.is_empty() {
                return Err(BackendError::RoutesNotInPlace(missing));
            }
            logging::info("the live rules are exactly the requested ones");
        }
        Verb::Clean => {
            let removed = clean_everything(plan, opts)?;
            if removed.is_empty() {
                logging::info("nothing of ours to remove");
            }
            for line in removed {
                logging::info(&format!("removed: {line}"));
            }
        }
    }
    Ok(())
}

/// A clean with every backend, then the routing; every failure is collected and reported.
fn clean_everything(plan: &Plan, opts: &RunOptions) -> Result<Vec<String>, BackendError> {
    let backends: [Box<dyn Backend>; 2] = [
        Box::new(iptables::Iptables::new(opts, None)),
        Box::new(netlink::Netlink),
    ];
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for b in backends {
        match b.clean(plan) {
            Ok(r) => removed.extend(r),
            Err(BackendError::Clean(f)) => failures.extend(f),
            Err(e) => failures.push(e.to_string()),
        }
    }
    match routes::clean(plan.ours.mark, plan.ours.table) {
        Ok(r) => removed.extend(r),
        Err(e) => failures.push(format!("TPROXY routing: {e}")),
    }
    if failures.is_empty() {
        Ok(removed)
    } else {
        Err(BackendError::Clean(failures))
    }
}
