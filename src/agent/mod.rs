//! The node agent (Istio ambient's istio-cni agent, issue #23; docs/agent.md): the node-side
//! half that tells ztunnel which pods to proxy. `zds` holds the protocol's messages and
//! `server` the unix SOCK_SEQPACKET listener ztunnel connects to (docs/zds.md); `eligible` is
//! the one decision of which pods are ambient; `events` the socket the plugin's ADD and DEL
//! talk to; `enrol` what is done for a pod (rules, ztunnel, probe set, annotation) and the
//! drift pass; `netns_scan` finds a running pod's namespace in /proc; `node` starts it all
//! beside the installer; `watch` lists and watches this node's pods
//! and namespaces through the API server and syncs each pod with the decision; `metrics`
//! serves its counters to Prometheus; `repair` puts a sidecar pod's
//! missing rules in (it started while the plugin was not in the chain), or deletes or labels
//! it, as istio-cni's repair modes do.

pub mod eligible;
pub mod enrol;
pub mod events;
pub mod metrics;
pub mod netns_scan;
pub mod node;
pub mod repair;
pub mod server;
pub mod watch;
pub mod zds;
