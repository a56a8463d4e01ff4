//! The program behind `main`: argv + env + host → exit code, with stdout passed in so tests
//! (and the property test) can run it in-process. stdout carries only dry-run output; every
//! log and error goes to stderr.
//!
//! Exit codes: 0 done; 1 apply/clean failed, `check` found a difference, or a host fact could
//! not be read; 2 bad input; 126 validation failed (as upstream).

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use crate::cli::{Cli, Command, Flags, subcommand_for_argv0};
pub use crate::config::Subcommand;
use crate::config::{self, Action, Config, ConfigError, EnvSource, OutputFormat};
use crate::host::Host;
use crate::logging;
use crate::netns;
use crate::plan::{self, Family, Plan};
use crate::render;

/// Errors that end a run, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to write output: {0}")]
    Output(#[source] std::io::Error),
    #[error("failed to write the dry-run trace to {path}: {source}")]
    Trace {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Netlink(#[from] crate::backend::netlink::NetlinkError),
    #[error(transparent)]
    Iptables(#[from] crate::backend::iptables::IptError),
    #[error("{0}\n{msg}", msg = crate::validate::FAILURE_MESSAGE)]
    Validation(#[from] crate::validate::ValidationError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(e) => e.exit_code(),
            RunError::Validation(_) => 126,
            _ => 1,
        }
    }
}

/// Insert the subcommand when invoked as `istio-iptables` / `istio-clean-iptables`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let argv0 = args.first().and_then(|a| a.to_str()).unwrap_or("");
    match subcommand_for_argv0(argv0) {
        Some(sub) => {
            let mut out = vec![OsString::from("meshtables"), OsString::from(sub)];
            out.extend(args.into_iter().skip(1));
            out
        }
        None => args,
    }
}

/// Parse and run; returns the process exit code. Errors are printed to stderr here.
pub fn main_with(
    args: Vec<OsString>,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() {
                let _ = write!(std::io::stderr(), "{e}");
                return 2;
            }
            let _ = write!(stdout, "{e}");
            return 0;
        }
    };
    let (flags, sub) = match &cli.command {
        Command::Apply(f) => (f, Subcommand::Apply),
        Command::Clean(f) => (f, Subcommand::Clean),
        Command::Check(f) => (f, Subcommand::Check),
    };
    let level = flags
        .log_output_level
        .as_deref()
        .and_then(logging::parse_level)
        .unwrap_or(logging::Level::Info);
    let json = flags
        .log_as_json
        .as_deref()
        .and_then(config::parse_bool)
        .unwrap_or(false);
    logging::init(level, json);
    match execute(flags, sub, env, host, stdout) {
        Ok(()) => 0,
        Err(e) => {
            logging::error(&e.to_string());
            if !logging::enabled(logging::Level::Error) {
                let _ = writeln!(std::io::stderr(), "meshtables: {e}");
            }
            e.exit_code()
        }
    }
}

/// Resolve, plan, then dry-run, apply, clean or check. With `--network-namespace` (and not a
/// dry run, which touches nothing) all of it, from reading host facts on, happens inside
/// that namespace.
pub fn execute(
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let early = config::early(flags, env)?;
    match early.network_namespace {
        Some(ns) if !early.dry_run => {
            let mut out = Vec::new();
            netns::run_in(&ns, || run(flags, sub, env, host, &mut out))??;
            stdout.write_all(&out).map_err(RunError::Output)
        }
        _ => run(flags, sub, env, host, stdout),
    }
}

fn run(
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let cfg = config::resolve(flags, sub, env, host)?;
    let action = cfg.action;
    if cfg.redirect_dns
        && !cfg.capture_all_dns
        && cfg.dns_servers_v4.is_empty()
        && cfg.dns_servers_v6.is_empty()
    {
        logging::warn(
            "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled.",
        );
    }
    logging::debug_with(|| {
        format!(
            "config: {}",
            serde_json::to_string(&cfg).unwrap_or_default()
        )
    });
    let plan = plan::build(&cfg);
    if cfg.dry_run {
        dry_run(&cfg, &plan, env, stdout)?;
    } else if cfg.skip_rule_apply && action == Action::Apply {
        logging::info("skipping rule apply (--skip-rule-apply)");
    } else {
        act(action, &cfg, &plan, env)?;
    }
    // Upstream runs the validation in dry-run too, and after --skip-rule-apply.
    if cfg.run_validation && action == Action::Apply {
        crate::validate::run(&cfg)?;
        logging::info("validation passed: the probe connection was redirected");
    }
    Ok(())
}

fn act(action: Action, cfg: &Config, plan: &Plan, env: &dyn EnvSource) -> Result<(), RunError> {
    match (action, cfg.native_nftables) {
        (Action::Check, true) => crate::backend::netlink::check(plan)?,
        (Action::Check, false) => crate::backend::iptables::check(plan, cfg)?,
        // A clean removes everything of ours whatever the backend flag says: the tables of
        // either backend, in every iptables variant found, and TPROXY routing.
        (Action::Clean, _) => {
            let removed = crate::backend::iptables::clean(plan, cfg)?;
            if removed.is_empty() {
                logging::info("nothing of ours to remove");
            }
            for line in removed {
                logging::info(&format!("removed: {line}"));
            }
        }
        (Action::Apply, true) => return native(plan, env),
        (Action::Apply, false) => crate::backend::iptables::apply(plan, cfg)?,
    }
    if action == Action::Check {
        logging::info("the live rules are exactly the requested ones");
    }
    Ok(())
}

/// Apply with the nftables netlink backend.
fn native(plan: &Plan, env: &dyn EnvSource) -> Result<(), RunError> {
    use crate::backend::netlink;
    let fault = env
        .var(netlink::TEST_FAULT_ENV)
        .is_some_and(|v| v == "reject-rule");
    let report = netlink::apply(plan, fault)?;
    logging::info(&format!(
        "nftables rules programmed: {} messages in one transaction{}; {} routing objects added",
        report.messages,
        if report.replaced.is_empty() {
            String::new()
        } else {
            format!(
                ", replacing {}",
                report
                    .replaced
                    .iter()
                    .map(|t| t.nft_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        report.routes
    ));
    logging::debug_with(|| format!("transaction:\n{}", render::nft::transaction(&plan.nft)));
    Ok(())
}

/// `--dry-run`: print what would be applied (or cleaned) and write upstream's trace file.
fn dry_run(
    cfg: &Config,
    plan: &Plan,
    env: &dyn EnvSource,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let cleanup = cfg.action == Action::Clean;
    let text = match (cfg.output, cfg.native_nftables, cleanup) {
        (OutputFormat::Json, _, _) => {
            let mut s = serde_json::to_string_pretty(plan).expect("plan serializes");
            s.push('\n');
            s
        }
        (OutputFormat::Text, true, false) => render::nft::transaction(&plan.nft),
        (OutputFormat::Text, true, true) => render::nft::cleanup_transaction(),
        (OutputFormat::Text, false, cleanup) => {
            let mut s = String::new();
            for f in plan.xtables.families() {
                let (label, bin) = match f {
                    Family::V4 => ("IPv4", "iptables"),
                    Family::V6 => ("IPv6", "ip6tables"),
                };
                let rules = plan.xtables.rules(f);
                if cleanup {
                    s.push_str(&format!(
                        "# {label}: the {bin} commands upstream's clean runs for these flags (meshtables' clean removes these, and whatever else of ours the live rules hold)\n"
                    ));
                    for cmd in render::iptables::cleanup_commands(rules) {
                        s.push_str(&format!("{bin} {}\n", cmd.join(" ")));
                    }
                } else {
                    s.push_str(&format!("# {label}: {bin}-restore --noflush input\n"));
                    s.push_str(&render::iptables::restore(rules));
                }
            }
            s
        }
    };
    stdout
        .write_all(text.as_bytes())
        .map_err(RunError::Output)?;
    stdout.flush().map_err(RunError::Output)?;

    if let Some(path) = env.var("DRY_RUN_FILE_PATH").filter(|p| !p.is_empty()) {
        let trace = if cfg.native_nftables {
            if cleanup {
                render::nft::cleanup_transaction()
            } else {
                render::nft::transaction(&plan.nft)
            }
        } else if cleanup {
            render::trace::cleanup(&plan.xtables)
        } else {
            render::trace::apply(&plan.xtables)
        };
        std::fs::write(&path, trace).map_err(|source| RunError::Trace { path, source })?;
    }
    Ok(())
}
