//! Istio's sidecar interception (`istio-iptables`): its flag table (`flags`), the resolution of
//! flags, environment and host facts into what to do and the policy (`config`), its chains and
//! tables (`chains`), its policy (`policy`), the walk of that policy in upstream's order (`walk`) with upstream's nft
//! spellings (`spell`), the plan it builds (`build`), and what upstream prints beyond the
//! rules (`upstream`: the dry-run text, the clean commands, the trace).

mod build;
pub mod chains;
pub mod config;
pub mod flags;
pub mod policy;
pub mod spell;
#[cfg(test)]
pub(crate) mod testing;
pub mod upstream;
mod walk;

pub use build::{build, build_for};
pub use upstream::{dry_run, trace_file};

use crate::flags::Flags;
use crate::host::Host;
use crate::options::{BackendChoice, Early, Resolved, RunOptions, Subcommand, Verb};
use crate::plan::{Dialects, Plan};
use crate::resolve::{ConfigError, EnvSource};
use crate::run::{Profile, RunError};
use crate::values::OutputFormat;

/// Istio's sidecar scheme, as the engine drives it.
pub struct Istio;

impl Profile for Istio {
    type Policy = policy::Policy;

    fn early(
        &self,
        flags: &Flags,
        sub: Subcommand,
        env: &dyn EnvSource,
    ) -> Result<Early, ConfigError> {
        config::early(flags, sub, env)
    }

    fn resolve(
        &self,
        flags: &Flags,
        early: &Early,
        env: &dyn EnvSource,
        host: &dyn Host,
    ) -> Result<Resolved<policy::Policy>, ConfigError> {
        config::resolve(flags, early, env, host)
    }

    fn plan(&self, policy: &policy::Policy, dialects: Dialects) -> Plan {
        build_for(policy, dialects)
    }

    fn dry_run(
        &self,
        verb: Verb,
        backend: BackendChoice,
        format: OutputFormat,
        plan: &Plan,
    ) -> String {
        dry_run(verb, backend, format, plan)
    }

    fn trace_file(&self, verb: Verb, backend: BackendChoice, plan: &Plan) -> String {
        trace_file(verb, backend, plan)
    }

    /// `--run-validation`: upstream's redirect probe (exit 126 when it fails).
    fn validate(&self, run: &RunOptions) -> Result<(), RunError> {
        if let Some(v) = &run.validation {
            crate::validate::run(v)?;
            crate::logging::info("validation passed: the probe connection was redirected");
        }
        Ok(())
    }
}
