//! The node agent (Istio ambient's istio-cni agent, issue #23): the node-side half that tells
//! ztunnel which pods to proxy. So far its ZDS server: `zds` holds the protocol's messages,
//! `server` the unix SOCK_SEQPACKET listener that ztunnel connects to (docs/zds.md).

pub mod netns_scan;
pub mod server;
pub mod zds;
