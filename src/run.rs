//! The engine: flags + subcommand + environment + host → a dry run, an apply, a clean or a
//! check, through one backend, for the scheme it is handed (`Profile`). Every front end (the
//! CLI, the CNI plugin, the installer's probe of the plugin's settings) calls it from above;
//! it knows no front end and no scheme: each scheme's folder implements `Profile`
//! (`profile::istio::Istio`, `profile::ambient::Ambient`).

use std::io::Write;

use crate::backend::{self, BackendError};
use crate::flags::Flags;
use crate::host::Host;
use crate::logging;
use crate::netns;
pub use crate::options::{BackendChoice, Early, Resolved, Subcommand, Verb};
use crate::plan::{self, Plan};
pub use crate::resolve::{ConfigError, EnvSource};
use crate::values::OutputFormat;

/// A scheme as the engine drives it: its one decision of what to do, its resolution of
/// flags, environment and host facts, its plan, and what its upstream prints for a dry run.
pub trait Profile: Sync {
    /// What the scheme's rules depend on.
    type Policy: serde::Serialize;

    /// What to do, from the subcommand and the flags, before any host fact is read.
    fn early(
        &self,
        flags: &Flags,
        sub: Subcommand,
        env: &dyn EnvSource,
    ) -> Result<Early, ConfigError>;

    /// Flags, environment and host facts (read where the work is done) for that action.
    fn resolve(
        &self,
        flags: &Flags,
        early: &Early,
        env: &dyn EnvSource,
        host: &dyn Host,
    ) -> Result<Resolved<Self::Policy>, ConfigError>;

    /// The plan of `policy`, in the dialects asked for.
    fn plan(&self, policy: &Self::Policy, dialects: plan::Dialects) -> Plan;

    /// What `--dry-run` prints on stdout.
    fn dry_run(
        &self,
        verb: Verb,
        backend: BackendChoice,
        format: OutputFormat,
        plan: &Plan,
    ) -> String;

    /// Upstream's dry-run trace, written to `DRY_RUN_FILE_PATH` when it is set.
    fn trace_file(&self, verb: Verb, backend: BackendChoice, plan: &Plan) -> String;

    /// Upstream's redirect probe after an apply, when the options ask for it (Istio's
    /// `--run-validation`); nothing by default.
    fn validate(&self, _run: &crate::options::RunOptions) -> Result<(), RunError> {
        Ok(())
    }
}

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

/// How long a run waits for what another holds. The CLI and the CNI plugin wait as long as
/// iptables' `--wait=30` (`lock::WAIT`) for a namespace's lock: the holder is another run of
/// ours, about to finish. The node agent waits less (`Waits::agent`): it serves every pod of
/// the node one write at a time, and in a pod's namespace any of the pod's own processes can
/// hold the lock (an abstract socket there), for as long as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// For the network namespace's lock (`lock::acquire`); `None`: the caller holds it
    /// already (`lock::acquire_in`), and the run takes none.
    pub lock: Option<std::time::Duration>,
}

impl Default for Waits {
    fn default() -> Waits {
        Waits {
            lock: Some(crate::lock::WAIT),
        }
    }
}

impl Waits {
    /// The node agent's: a second for the lock, far above a run of ours (milliseconds), far
    /// below what would stall the node's other pods behind one that holds its lock.
    pub fn agent() -> Waits {
        Waits {
            lock: Some(std::time::Duration::from_secs(1)),
        }
    }

    /// For a caller that took the namespace's lock itself (`lock::acquire_in`) and holds it
    /// for the whole run: the node agent, which waits for a pod's lock before it queues
    /// behind the node's other pods, not while they queue behind it.
    pub fn held() -> Waits {
        Waits { lock: None }
    }
}

/// Decides what to do, then resolves, plans, and dry-runs, applies, cleans or checks, for
/// `profile`. With `--network-namespace` (and not a dry run, which touches nothing) all of
/// it, from reading host facts on, happens inside that namespace.
pub fn execute<P: Profile>(
    profile: &P,
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    execute_with(profile, flags, sub, env, host, stdout, Waits::default())
}

/// `execute`, waiting as `waits` says.
pub fn execute_with<P: Profile>(
    profile: &P,
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
    waits: Waits,
) -> Result<(), RunError> {
    let early = profile.early(flags, sub, env)?;
    match &early.network_namespace {
        Some(ns) if !early.action.dry_run => {
            // A plugin runs in the node's namespace: a CNI_NETNS naming it is refused. CNI
            // mode as resolved (flag or CNI_MODE), not as the command line spells it.
            if early.cni_mode {
                netns::refuse_own(ns)?;
            }
            let mut out = Vec::new();
            netns::run_in(ns, || {
                run_here(profile, flags, &early, env, host, &mut out, waits)
            })??;
            stdout.write_all(&out).map_err(RunError::Output)
        }
        _ => run_here(profile, flags, &early, env, host, stdout, waits),
    }
}

fn run_here<P: Profile>(
    profile: &P,
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    host: &dyn Host,
    stdout: &mut dyn Write,
    waits: Waits,
) -> Result<(), RunError> {
    let r = profile.resolve(flags, early, env, host)?;
    for w in &r.warnings {
        logging::warn(w);
    }
    logging::debug_with(|| format!("config: {}", serde_json::to_string(&r).unwrap_or_default()));
    let verb = r.action.verb;
    // Applying or checking over netlink needs only the nftables dialect; everything else
    // (dry runs, JSON, the iptables backend, a clean of every backend) both.
    let netlink_only =
        !r.action.dry_run && verb != Verb::Clean && r.run.backend == BackendChoice::Netlink;
    let dialects = plan::Dialects {
        xtables: !netlink_only,
        nft: true,
    };
    let plan = profile.plan(&r.policy, dialects);
    if r.action.dry_run {
        dry_run(profile, &r, &plan, env, stdout)?;
    } else if r.run.skip_rule_apply && verb == Verb::Apply {
        logging::info("skipping rule apply (--skip-rule-apply)");
    } else {
        backend::dispatch::run(verb, &plan, &r.run, waits.lock)?;
    }
    // Upstream runs the validation in a dry run too, and after --skip-rule-apply.
    if verb == Verb::Apply {
        profile.validate(&r.run)?;
    }
    Ok(())
}

/// `--dry-run`: print what would be applied (or cleaned) and write upstream's trace file.
fn dry_run<P: Profile>(
    profile: &P,
    r: &Resolved<P::Policy>,
    plan: &Plan,
    env: &dyn EnvSource,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let verb = r.action.verb;
    let text = profile.dry_run(verb, r.run.backend, r.run.output, plan);
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(RunError::Output)?;
    if let Some(path) = env.var("DRY_RUN_FILE_PATH").filter(|p| !p.is_empty()) {
        let trace = profile.trace_file(verb, r.run.backend, plan);
        std::fs::write(&path, trace).map_err(|source| RunError::Trace { path, source })?;
    }
    Ok(())
}
