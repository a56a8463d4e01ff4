//! meshtables: program a pod's netfilter so a service-mesh sidecar intercepts its traffic.
//!
//! Data flows one way: argv + env → `cli::Flags` → `config::Config` (validated, host facts
//! read) → `plan::Plan` (pure) → renderers (`render`) or backends.
#![deny(unsafe_code)]

pub mod backend; // nftables netlink and iptables-binaries appliers
pub mod cli; // clap definitions only
pub mod cmd; // argv + env + host → exit code; dry-run output
pub mod cni; // the chained CNI plugin (argv[0] meshtables-cni), Kubernetes pod lookup
pub mod config; // flags + env + host facts → validated Config
pub mod host; // facts read from the machine: addresses, resolv.conf, /etc/passwd
pub mod logging; // stderr logger (text or JSON), upstream's level flag
pub mod netns; // run work inside a network namespace given by path
pub mod plan; // Config → Plan, typed rules, no I/O
pub mod render; // Plan → iptables-restore text, nft text, upstream's dry-run trace
pub mod validate; // --run-validation: the redirect probe (exit 126)
