//! meshtables: program a pod's netfilter so a service-mesh proxy intercepts its traffic.
//!
//! Data flows one way, and no module imports a module that imports it (tests/layout.rs):
//!
//! ```text
//! argv + env ─┐ a profile's flag table     ┌─▶ Action     what to do (decided once)
//! CNI conf  ──┼──▶ resolve + profile config ┼─▶ RunOptions how to run
//! pod (API) ──┘   + host facts (host)      └─▶ Policy     what the rules depend on
//!                                                 │
//!          profile walk: its rules once, two dialects (plan: xtables, nft) → Plan (+ Ownership)
//!                                                 │
//!          render (text, JSON) ◀── run (the engine) ──▶ backend (netlink | iptables, routes; nl)
//! ```
//!
//! Front ends call the engine from above, handing it a scheme (`run::Profile`): `cmd` (the
//! CLI), `cni` (the plugin), `install`.

#[cfg(feature = "agent")]
pub mod agent; // the node agent: the ZDS server that hands pods' netns to ztunnel
pub mod backend; // the Backend trait; netlink and iptables siblings over one kernel layer (nl)
pub mod cmd; // the CLI front end: argv + env + host → exit code
pub mod cni; // the CNI front end (argv[0] meshtables-cni): conf, pod semantics, API client
pub mod flags; // flag-table machinery, and the installer's table
pub mod host; // facts read from the machine, bounded: addresses, resolv.conf, passwd, group
#[cfg(feature = "kubernetes")]
pub mod install; // `meshtables cni-install`: the DaemonSet that installs the CNI plugin
pub mod lock; // one writer per network namespace (an abstract unix socket)
pub mod logging; // stderr logger (text or JSON), upstream's level flag
pub mod netns; // run work inside a network namespace given by path
pub mod options; // what a run does and how (verb, backend, namespace): the engine's inputs
pub mod plan; // the plan: typed rules, the two dialects, what is ours; no scheme, no I/O
pub mod profile; // interception schemes (Istio's sidecar, Istio ambient's in-pod rules), each a folder
pub use profile::istio::{config, policy}; // Istio's resolution and policy, by their old paths
pub mod render; // Plan → iptables-restore text, nft text, JSON
pub mod resolve; // the generic resolver: env sources, origins, precedence, errors
pub mod run; // the engine: flags → dry run, apply, clean or check through one backend
pub mod selector; // label selectors and istio-cni's ambient enablement selectors (a leaf over values)
pub mod validate; // --run-validation: the redirect probe (exit 126)
pub mod values; // validated newtypes and their parsers (a leaf)
