//! Interception schemes: what a scheme's rules are and which objects are its own. Each scheme
//! is a folder (`istio`: the sidecar's `istio-iptables`; `ambient`: the in-pod redirection to
//! ztunnel), and implements the engine's `run::Profile`: its flag table, its resolution into a policy, its walk of that policy into the
//! generic plan (`plan`), its chains and upstream's quirks. The plan, the renderers and the
//! backends know no scheme: a scheme is a value they are handed.

pub mod ambient;
pub mod istio;
