//! meshtables: program a pod's netfilter so a service-mesh sidecar intercepts its traffic.
//!
//! Data flows one way:
//!
//! ```text
//! argv + env ─┐ flags (the table)         ┌─▶ Action     what to do (decided once)
//! CNI conf  ──┼──────────────▶ config ────┼─▶ RunOptions how to run
//! pod (API) ──┘   + host facts (host)     └─▶ Policy     what the rules depend on
//!                                                │
//!                    plan::build: one walk, two dialects (xtables, nft) → Plan
//!                                                │
//!                        render (text, JSON) ◀───┴───▶ backend (netlink | iptables, routes)
//! ```

pub mod backend; // the Backend trait; netlink and iptables siblings; TPROXY routing
pub mod cmd; // the CLI front end: argv + env + host → exit code
pub mod cni; // the CNI front end (argv[0] meshtables-cni): conf, pod semantics, API client
pub mod flags; // the flag table: every flag declared once
pub mod host; // facts read from the machine, bounded: addresses, resolv.conf, passwd, group
#[cfg(feature = "kubernetes")]
pub mod install; // `meshtables cni-install`: the DaemonSet that installs the CNI plugin
pub mod lock; // one writer per network namespace (an abstract unix socket)
pub mod logging; // stderr logger (text or JSON), upstream's level flag
pub mod netns; // run work inside a network namespace given by path
pub mod options; // what a run does and how (verb, backend, namespace): the engine's inputs
pub mod plan; // Policy → Plan: one walk, two dialects, typed rules, no I/O
pub mod profile; // interception schemes (Istio's sidecar rules): a folder each
pub use profile::istio::{config, policy}; // Istio's resolution and policy, by their old paths
pub mod render; // Plan → iptables-restore text, nft text, upstream's trace, dry-run output
pub mod resolve; // the generic resolver: env sources, origins, precedence, errors
pub mod run; // the engine: flags → dry run, apply, clean or check through one backend
pub mod validate; // --run-validation: the redirect probe (exit 126)
pub mod values; // validated newtypes and their parsers (a leaf)
