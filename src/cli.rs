//! Command-line definitions, and nothing else: clap types never leave this module's callers
//! (`config::resolve` turns `Flags` into a validated `Config`).
//!
//! Every value is kept as the raw string the user typed (`Option<String>`), so config can
//! tell "given on the command line" from "not given", apply upstream's precedence (flag >
//! secondary env > primary env > default) and name the exact flag or variable in errors.
//! Booleans follow pflag: `--dry-run`, `--dry-run=true`, `-n`, `--dry-run=false`.

use clap::{Args, Parser, Subcommand};

/// Program an Istio sidecar's traffic interception (a drop-in for istio-iptables).
#[derive(Debug, Parser)]
#[command(name = "meshtables", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the interception rules (upstream's `istio-iptables`).
    #[command(alias = "istio-iptables", args_override_self = true)]
    Apply(Flags),
    /// Remove the interception rules (upstream's `istio-clean-iptables` / `--cleanup-only`).
    #[command(alias = "istio-clean-iptables", args_override_self = true)]
    Clean(Flags),
    /// Exit 0 when the live rules are exactly those these flags install, else 1 and what differs.
    #[command(args_override_self = true)]
    Check(Flags),
}

/// The name the binary must be invoked under to act as a subcommand (busybox style).
pub fn subcommand_for_argv0(argv0: &str) -> Option<&'static str> {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    match base {
        "istio-iptables" => Some("istio-iptables"),
        "istio-clean-iptables" => Some("istio-clean-iptables"),
        _ => None,
    }
}

macro_rules! flags {
    ($( $(#[doc = $doc:literal])* $field:ident: $long:literal $(, short = $short:literal)? $(, bool = $b:tt)? ;)*) => {
        /// Every flag of upstream istio-iptables, plus meshtables' extensions.
        #[derive(Debug, Default, Clone, Args)]
        pub struct Flags {
            $(
                $(#[doc = $doc])*
                #[arg(long = $long $(, short = $short)?, allow_hyphen_values = flags!(@hyphen $($b)?) $(, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = flags!(@bool $b))?)]
                pub $field: Option<String>,
            )*
        }

        impl Flags {
            /// Every flag's long name, in declaration order.
            pub const LONG_NAMES: &[&str] = &[$($long),*];

            /// Sets a flag by its long name, as if it had been given on the command line.
            /// `false` for a name that is not a flag.
            pub fn set(&mut self, long: &str, value: String) -> bool {
                match long {
                    $($long => self.$field = Some(value),)*
                    _ => return false,
                }
                true
            }

            /// The value of a flag by its long name, if it was given.
            pub fn get(&self, long: &str) -> Option<&str> {
                match long {
                    $($long => self.$field.as_deref(),)*
                    _ => None,
                }
            }

            /// Whether the flag with this long name is a boolean.
            pub fn is_bool(long: &str) -> bool {
                match long {
                    $($long => flags!(@is_bool $($b)?),)*
                    _ => false,
                }
            }
        }
    };
    (@is_bool) => { false };
    (@is_bool $b:tt) => { true };
    (@bool $b:tt) => { "BOOL" };
    // pflag gives a value flag the next argument even when it starts with '-'.
    (@hyphen) => { true };
    (@hyphen $b:tt) => { false };
}

flags! {
    /// Port to which all outbound TCP traffic is redirected (Envoy). No env var, as upstream.
    envoy_port: "envoy-port", short = 'p';
    /// Port to which inbound TCP traffic is redirected. Env INBOUND_CAPTURE_PORT.
    inbound_capture_port: "inbound-capture-port", short = 'z';
    /// Istio tunnel (HBONE) port, never redirected. Env INBOUND_TUNNEL_PORT.
    inbound_tunnel_port: "inbound-tunnel-port", short = 'e';
    /// UIDs (comma separated) whose traffic is not redirected. Env PROXY_UID.
    /// Default: the uid of user $ENVOY_USER (istio-proxy) in /etc/passwd, else 1337.
    proxy_uid: "proxy-uid", short = 'u';
    /// GIDs (comma separated) whose traffic is not redirected; defaults to -u. Env PROXY_GID.
    proxy_gid: "proxy-gid", short = 'g';
    /// Inbound interception mode: REDIRECT (default) or TPROXY. Env ISTIO_INBOUND_INTERCEPTION_MODE.
    istio_inbound_interception_mode: "istio-inbound-interception-mode", short = 'm';
    /// Inbound ports to redirect, or "*" for all; empty disables inbound capture. Env ISTIO_INBOUND_PORTS.
    istio_inbound_ports: "istio-inbound-ports", short = 'b';
    /// Inbound ports excluded when -b is "*". Env ISTIO_LOCAL_EXCLUDE_PORTS.
    istio_local_exclude_ports: "istio-local-exclude-ports", short = 'd';
    /// Interfaces whose traffic is never captured. Env ISTIO_EXCLUDE_INTERFACES.
    istio_exclude_interfaces: "istio-exclude-interfaces", short = 'c';
    /// Outbound CIDRs to redirect, or "*" for all; empty disables outbound capture. Env ISTIO_SERVICE_CIDR.
    istio_service_cidr: "istio-service-cidr", short = 'i';
    /// Outbound CIDRs excluded from redirection. Env ISTIO_SERVICE_EXCLUDE_CIDR.
    istio_service_exclude_cidr: "istio-service-exclude-cidr", short = 'x';
    /// Outbound ports always redirected. Env ISTIO_OUTBOUND_PORTS.
    istio_outbound_ports: "istio-outbound-ports", short = 'q';
    /// Outbound ports never redirected. Env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE.
    istio_local_outbound_ports_exclude: "istio-local-outbound-ports-exclude", short = 'o';
    /// Virtual interfaces whose inbound traffic is treated as outbound. Env KUBE_VIRT_INTERFACES.
    kube_virt_interfaces: "kube-virt-interfaces", short = 'k';
    /// Packet mark used by TPROXY inbound capture. Env ISTIO_INBOUND_TPROXY_MARK.
    istio_inbound_tproxy_mark: "istio-inbound-tproxy-mark", short = 't';
    /// Routing table used by TPROXY inbound capture. Env ISTIO_INBOUND_TPROXY_ROUTE_TABLE.
    istio_inbound_tproxy_route_table: "istio-inbound-tproxy-route-table", short = 'r';
    /// Print what would be done; touch nothing. Env DRY_RUN.
    dry_run: "dry-run", short = 'n', bool = true;
    /// Listen port of the validation probe. Env IPTABLES_PROBE_PORT.
    iptables_probe_port: "iptables-probe-port";
    /// Validation timeout (Go duration, e.g. 5s). Env PROBE_TIMEOUT.
    probe_timeout: "probe-timeout";
    /// Do not apply rules. Env SKIP_RULE_APPLY.
    skip_rule_apply: "skip-rule-apply", bool = true;
    /// Check that redirection works after applying. Env RUN_VALIDATION.
    run_validation: "run-validation", bool = true;
    /// Capture DNS to the agent's DNS proxy. Env REDIRECT_DNS, ISTIO_META_DNS_CAPTURE (wins).
    redirect_dns: "redirect-dns", bool = true;
    /// Drop packets in conntrack state INVALID. Env DROP_INVALID, INVALID_DROP (wins).
    drop_invalid: "drop-invalid", bool = true;
    /// Dual-stack: prefer finding an IPv6 address. Env DUAL_STACK, ISTIO_DUAL_STACK (wins).
    dual_stack: "dual-stack", bool = true;
    /// Capture all port-53 traffic, not only to the configured resolvers. Env CAPTURE_ALL_DNS.
    capture_all_dns: "capture-all-dns", bool = true;
    /// Network namespace (path) to program. Env NETWORK_NAMESPACE.
    network_namespace: "network-namespace";
    /// Run as invoked by a CNI plugin. Env CNI_MODE.
    cni_mode: "cni-mode", bool = true;
    /// Converge pre-existing, different rules instead of failing. Env RECONCILE.
    reconcile: "reconcile", bool = true;
    /// Only remove rules. Env CLEANUP_ONLY.
    cleanup_only: "cleanup-only", bool = true;
    /// Apply even if the rules appear to be in place. Env FORCE_APPLY.
    force_apply: "force-apply", bool = true;
    /// Use native nftables (netlink) instead of the iptables binaries. Env NATIVE_NFTABLES.
    native_nftables: "native-nftables", bool = true;
    /// Force the iptables variant: legacy or nft. Env FORCE_IPTABLES_BINARY.
    force_iptables_binary: "force-iptables-binary";
    /// [meshtables] auto (detect from interface addresses, as upstream), true or false. Env ENABLE_IPV6.
    enable_ipv6: "enable-ipv6";
    /// [meshtables] DNS servers to capture; when given (even empty), resolv.conf is not read. Env DNS_SERVERS.
    dns_servers: "dns-servers";
    /// [meshtables] resolv.conf to read DNS servers from (default /etc/resolv.conf). Env RESOLV_CONF.
    resolv_conf: "resolv-conf";
    /// [meshtables] Groups whose outbound traffic is captured ("*" = all). Env OUTBOUND_OWNER_GROUPS, ISTIO_OUTBOUND_OWNER_GROUPS.
    outbound_owner_groups: "outbound-owner-groups";
    /// [meshtables] Groups whose outbound traffic is not captured. Env OUTBOUND_OWNER_GROUPS_EXCLUDE, ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE.
    outbound_owner_groups_exclude: "outbound-owner-groups-exclude";
    /// [meshtables] The IPv4 loopback CIDR (default 127.0.0.1/32). Env IPV4_LOOPBACK_CIDR, ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR.
    ipv4_loopback_cidr: "ipv4-loopback-cidr";
    /// [meshtables] Dry-run output: text (restore or nft text) or json (the plan).
    output: "output";
    /// Log level, upstream syntax: LEVEL or SCOPE:LEVEL,... (debug, info, warn, error, none).
    log_output_level: "log_output_level";
    /// Log as JSON lines.
    log_as_json: "log_as_json", bool = true;
    /// Accepted for compatibility; logs always go to stderr.
    log_target: "log_target";
    /// Accepted for compatibility; ignored.
    log_caller: "log_caller";
    /// Accepted for compatibility; ignored.
    log_stacktrace_level: "log_stacktrace_level";
}
