//! Istio's sidecar interception (`istio-iptables`): its chains, and (moving here) its flags,
//! resolution, policy walk and upstream's quirks.

pub mod chains;
