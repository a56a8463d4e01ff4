//! The one place that chooses a backend and carries out the verb with it, ordering policy
//! routing around the rules. A sibling of the backends, so that they and their trait
//! (`backend`) depend on nothing here.

use super::api::{Backend, BackendError};
use super::{iptables, netlink, nl, routes};
use crate::logging;
use crate::options::{BackendChoice, RunOptions, Verb};
use crate::plan::Plan;

/// The backend the options choose.
pub fn chosen(run: &RunOptions) -> Box<dyn Backend> {
    match run.backend {
        BackendChoice::Netlink => Box::new(netlink::Netlink),
        BackendChoice::Iptables(variant) => Box::new(iptables::Iptables::new(run, variant)),
    }
}

/// Carries out `verb` for `plan`. Policy routing goes in before the rules that send packets
/// to it and comes out after them, so no intermediate state marks packets that then have
/// nowhere to go. `lock_wait`: how long to wait for the namespace's lock (`None`: the caller
/// holds it, `lock::acquire_in`).
pub fn run(
    verb: Verb,
    plan: &Plan,
    opts: &RunOptions,
    lock_wait: Option<std::time::Duration>,
) -> Result<(), BackendError> {
    // Every backend and the routing need it: say what to add before anything is tried.
    nl::session::check_capability()?;
    // One run at a time in this namespace, from the first read to the last write.
    let _lock = lock_wait.map(crate::lock::acquire).transpose()?;
    match verb {
        Verb::Apply => {
            let added = routes::apply(plan, opts.reconcile || opts.force_apply)?;
            match chosen(opts).apply(plan) {
                Ok(done) => {
                    // The new rules are in: routing they no longer use can go.
                    for r in routes::retire(plan)? {
                        logging::info(&format!("removed (no longer used): {r}"));
                    }
                    logging::info(&format!("{done}; {} routing objects added", added.len()))
                }
                Err(e) => {
                    // A failed apply changes nothing: take out the routing it added.
                    if let Err(u) = routes::undo(&added) {
                        logging::error(&format!(
                            "could not take back the routing this run added: {u}"
                        ));
                    }
                    return Err(e);
                }
            }
        }
        Verb::Check => {
            chosen(opts).check(plan)?;
            let drift = routes::drift(plan)?;
            if !drift.is_empty() {
                return Err(BackendError::RoutesNotInPlace(drift));
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
    match routes::clean(&plan.ours) {
        Ok(r) => removed.extend(r),
        Err(e) => failures.push(e.to_string()),
    }
    if failures.is_empty() {
        Ok(removed)
    } else {
        Err(BackendError::Clean(failures))
    }
}

impl From<crate::lock::LockError> for BackendError {
    fn from(e: crate::lock::LockError) -> Self {
        BackendError::Failed(Box::new(e))
    }
}
