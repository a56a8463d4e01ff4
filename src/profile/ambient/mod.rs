//! Istio ambient's in-pod redirection to ztunnel (`meshtables ambient apply|clean|check`),
//! what istio-cni's node agent programs in each ambient pod: its flag table (`flags`), the
//! resolution of flags, environment and the pod's loopback into what to do and the policy
//! (`config`), its chains and tables (`chains`), its policy (`policy`), the walk of that policy
//! in upstream's order (`walk`) with upstream's nft spellings (`spell`), the plan it builds
//! with its policy routing (`build`), and what upstream runs, in its words (`upstream`).

mod build;
pub mod chains;
pub mod config;
pub mod flags;
pub mod host;
pub mod policy;
pub mod spell;
pub mod upstream;
mod walk;

pub use build::{build, build_for, mark_rule};

use crate::flags::Flags;
use crate::host::Host;
use crate::options::{BackendChoice, Early, Resolved, Subcommand, Verb};
use crate::plan::{Dialects, Plan};
use crate::resolve::{ConfigError, EnvSource};
use crate::run::Profile;
use crate::values::OutputFormat;

/// The ambient scheme, as the engine drives it.
pub struct Ambient;

impl Profile for Ambient {
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
        upstream::dry_run(verb, backend, format, plan)
    }

    fn trace_file(&self, verb: Verb, backend: BackendChoice, plan: &Plan) -> String {
        upstream::trace_file(verb, backend, plan)
    }
}
