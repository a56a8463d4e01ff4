//! The interface every backend implements, and what a backend failure is. A leaf of
//! `backend`: the backends, the routing and `dispatch` import it; it imports none of them.

use crate::plan::Plan;

/// What a backend failure was. Each backend's own error type converts into `Failed` (in its
/// module), so this module depends on none of them.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// What a backend or the routing reported.
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
    #[error("policy routing is not in place: {}", .0.join("; "))]
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

/// What happened to one member of a named address set (an add or a remove of an address
/// with its owner's comment), for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOutcome {
    Added,
    /// It was there with our comment already.
    Kept,
    /// It was another owner's (their comment): it is ours now.
    TookOver(String),
    Removed,
    Absent,
    /// Another owner's: left in place.
    LeftOthers(String),
}
