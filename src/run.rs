//! The engine: flags + subcommand + environment + host → a dry run, an apply, a clean or a
//! check, through one backend. Every front end (the CLI, the CNI plugin, the installer's
//! probe of the plugin's settings) calls it from above; it knows no front end.

use std::io::Write;

use crate::backend::{self, BackendError};
use crate::flags::Flags;
use crate::host::Host;
use crate::logging;
use crate::netns;
use crate::plan::{self, Plan};
use crate::profile::istio::config::{
    self, ConfigError, Early, EnvSource, Resolved, Subcommand, Verb,
};

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
    #[error(transparent)]
    Backend(#[from] BackendError),
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

/// Decides what to do, then resolves, plans, and dry-runs, applies, cleans or checks. With
/// `--network-namespace` (and not a dry run, which touches nothing) all of it, from reading
/// host facts on, happens inside that namespace.
pub fn execute(
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let early = config::early(flags, sub, env)?;
    match &early.network_namespace {
        Some(ns) if !early.action.dry_run => {
            // A plugin runs in the node's namespace: a CNI_NETNS naming it is refused. CNI
            // mode as resolved (flag or CNI_MODE), not as the command line spells it.
            if early.cni_mode {
                netns::refuse_own(ns)?;
            }
            let mut out = Vec::new();
            netns::run_in(ns, || run_here(flags, &early, env, host, &mut out))??;
            stdout.write_all(&out).map_err(RunError::Output)
        }
        _ => run_here(flags, &early, env, host, stdout),
    }
}

fn run_here(
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let r = config::resolve(flags, early, env, host)?;
    for w in &r.warnings {
        logging::warn(w);
    }
    logging::debug_with(|| format!("config: {}", serde_json::to_string(&r).unwrap_or_default()));
    let verb = r.action.verb;
    // Applying or checking over netlink needs only the nftables dialect; everything else
    // (dry runs, JSON, the iptables backend, a clean of every backend) both.
    let netlink_only =
        !r.action.dry_run && verb != Verb::Clean && r.run.backend == config::BackendChoice::Netlink;
    let dialects = plan::Dialects {
        xtables: !netlink_only,
        nft: true,
    };
    let plan = crate::profile::istio::build_for(&r.policy, dialects);
    if r.action.dry_run {
        dry_run(&r, &plan, env, stdout)?;
    } else if r.run.skip_rule_apply && verb == Verb::Apply {
        logging::info("skipping rule apply (--skip-rule-apply)");
    } else {
        backend::dispatch::run(verb, &plan, &r.run)?;
    }
    // Upstream runs the validation in a dry run too, and after --skip-rule-apply.
    if let Some(v) = &r.run.validation
        && verb == Verb::Apply
    {
        crate::validate::run(v)?;
        logging::info("validation passed: the probe connection was redirected");
    }
    Ok(())
}

/// `--dry-run`: print what would be applied (or cleaned) and write upstream's trace file.
fn dry_run(
    r: &Resolved,
    plan: &Plan,
    env: &dyn EnvSource,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let verb = r.action.verb;
    let text = crate::profile::istio::dry_run(verb, r.run.backend, r.run.output, plan);
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(RunError::Output)?;
    if let Some(path) = env.var("DRY_RUN_FILE_PATH").filter(|p| !p.is_empty()) {
        let trace = crate::profile::istio::trace_file(verb, r.run.backend, plan);
        std::fs::write(&path, trace).map_err(|source| RunError::Trace { path, source })?;
    }
    Ok(())
}
