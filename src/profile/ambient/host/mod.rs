//! Istio ambient's node rules (`meshtables ambient host apply|clean|check|add-pod|remove-pod`):
//! in the namespace that plays the host, the SNAT that gives the kubelet's TCP to an ambient
//! pod the probe address (so the pod's rules let it in uncaptured), and the probe sets of pod
//! addresses it applies to, whose members the agent adds and removes per pod. Its flags
//! (`flags`), resolution (`config`), the kubelet's uid (`kubelet`), its scheme and plan
//! (`build`), and upstream's words (`upstream`); `members` adds and removes set members.

pub mod build;
pub mod config;
pub mod flags;
mod kubelet;
pub mod members;
pub mod upstream;

use crate::flags::Flags;
use crate::host::Host;
use crate::options::{BackendChoice, Early, Resolved, Subcommand, Verb};
use crate::plan::{Dialects, Plan};
use crate::resolve::{ConfigError, EnvSource};
use crate::run::Profile;
use crate::values::OutputFormat;

/// The node's rules, as the engine drives them.
pub struct AmbientHost;

impl Profile for AmbientHost {
    type Policy = build::Policy;

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
    ) -> Result<Resolved<build::Policy>, ConfigError> {
        config::resolve(flags, early, env, host)
    }

    fn plan(&self, policy: &build::Policy, dialects: Dialects) -> Plan {
        build::build_for(policy, dialects)
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
