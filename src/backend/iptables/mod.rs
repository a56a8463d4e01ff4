//! Apply through the iptables binaries (the default backend, as upstream).
//!
//! Apply: detect the binaries per family; read the live state with `*-save`; if nothing of
//! ours is there, `*-restore --noflush` the plan's text (one atomic COMMIT per table). If our
//! rules are there and equal the plan (compared exactly, in `iptables-save`'s canonical form),
//! do nothing. If they differ: without `--reconcile` stop with status 1 and name the chains
//! that differ, changing nothing; with `--reconcile` (or `--force-apply`) replace them in one
//! restore per table, so there is no moment without interception and no DROP guardrail.
//!
//! Clean reads the live state of every variant (legacy and nft) and family and removes what
//! is ours in one restore per table. (`backend::run` adds the nftables tables and TPROXY
//! routing.)

pub mod detect;
pub mod exec;
pub mod state;

use std::path::PathBuf;

use super::{Backend, BackendError};
use crate::config::RunOptions;
use crate::logging;
use crate::plan::{Family, Plan};
use crate::values::XtablesVariant;
use detect::Xtables;
use exec::numeric_only;
pub use exec::{IptError, run};
use state::{State, drift, expected, has_ours, parse_save, replace_text};

/// The iptables backend: the binaries detection picks (or `--force-iptables-binary`).
pub struct Iptables {
    force: Option<XtablesVariant>,
    reconcile: bool,
    force_apply: bool,
    /// In CNI mode, writers lock the namespace's own file instead of the host's
    /// /run/xtables.lock, so pods set up concurrently do not serialize on it.
    lock_file: Option<PathBuf>,
}

impl Iptables {
    pub fn new(run: &RunOptions, force: Option<XtablesVariant>) -> Iptables {
        Iptables {
            force,
            reconcile: run.reconcile,
            force_apply: run.force_apply,
            lock_file: run.network_namespace.clone().filter(|_| run.cni_mode),
        }
    }

    fn restore(&self, x: &Xtables, text: &str) -> Result<(), IptError> {
        let mut args = vec!["--noflush"];
        args.extend(x.wait_args());
        let lock = self.lock_file.as_ref().map(|p| p.display().to_string());
        let env: Vec<(&str, &str)> = lock
            .iter()
            .map(|p| ("XTABLES_LOCKFILE", p.as_str()))
            .collect();
        logging::debug_with(|| format!("{} --noflush with:\n{text}", x.restore.display()));
        run(&x.restore, &args, Some(text), &env).map(|_| ())
    }

    /// Detects the binaries for `f` and reads the live state (detection's `-save`). The
    /// plan's groups are numeric (config resolved them), as `*-save` prints them.
    fn read_family(&self, plan: &Plan, f: Family) -> Result<FamilyState, IptError> {
        let mut x = detect::detect(f, self.force)?;
        let rules = plan.xtables.rules(f).to_vec();
        numeric_only(&rules)?;
        let saved = match x.saved.take() {
            Some(text) => text,
            None => run(&x.save, &[], None, &[])?,
        };
        let live = parse_save(&saved);
        let want = expected(&rules, f);
        Ok(FamilyState {
            x,
            rules,
            live,
            want,
        })
    }

    /// What apply will do for one family, decided before anything changes.
    fn step(&self, plan: &Plan, fam: &FamilyState, f: Family) -> Result<Step, IptError> {
        let mark = plan.ours.mark;
        if !has_ours(&fam.live, mark) {
            return Ok(Step::Fresh(crate::render::iptables::restore(&fam.rules)));
        }
        let chains = drift(&fam.live, &fam.want, mark);
        if chains.is_empty() && !self.force_apply {
            return Ok(Step::Nothing);
        }
        if !self.reconcile && !self.force_apply {
            return Err(IptError::Drift { family: f, chains });
        }
        if !chains.is_empty() {
            logging::info(&format!(
                "reconciling {}: {}",
                fam.x.name,
                chains.join(", ")
            ));
        }
        let text = replace_text(&fam.live, &fam.want, Some(&fam.rules), mark);
        Ok(Step::Replace(text.unwrap_or_default()))
    }

    /// Removes ours from one variant of one family; `None` when it is not installed.
    fn clean_variant(
        &self,
        f: Family,
        v: Option<XtablesVariant>,
        planned: &State,
        plan: &Plan,
        seen: &mut Vec<PathBuf>,
    ) -> Option<Result<String, String>> {
        let (name, bin, save, restore_bin) = detect::locate(f, v)?;
        // Plain `iptables` is usually a link to one of the variants already handled.
        let real = std::fs::canonicalize(&bin).unwrap_or(bin.clone());
        if seen.contains(&real) {
            return None;
        }
        seen.push(real);
        let live: State = match run(&save, &[], None, &[]) {
            Ok(text) => parse_save(&text),
            Err(e) => {
                logging::debug(&format!("{name}: not readable, skipped: {e}"));
                return None;
            }
        };
        let text = replace_text(&live, planned, None, plan.ours.mark)?;
        let x = Xtables {
            family: f,
            name: name.clone(),
            bin,
            save,
            restore: restore_bin,
            nf_tables: matches!(v, Some(XtablesVariant::Nft)),
            version: (1, 8, 0),
            existing_rules: true,
            saved: None,
        };
        Some(
            self.restore(&x, &text)
                .map(|()| {
                    let lines = text.lines().filter(|l| l.starts_with('-')).count();
                    format!("{name}: removed {lines} lines of ours")
                })
                .map_err(|e| e.to_string()),
        )
    }
}

/// What apply will do for one family.
enum Step {
    Fresh(String),
    Nothing,
    Replace(String),
}

/// One family as it is and as the plan wants it.
struct FamilyState {
    x: Xtables,
    rules: Vec<crate::plan::XtRule>,
    live: State,
    want: State,
}

impl Backend for Iptables {
    /// Reads every family first, then writes: a family whose rules differ stops the apply
    /// before anything changed.
    fn apply(&self, plan: &Plan) -> Result<String, BackendError> {
        let mut steps = Vec::new();
        for f in plan.xtables.families() {
            let fam = self.read_family(plan, f)?;
            logging::info(&format!("using {} ({})", fam.x.name, fam.x.bin.display()));
            let step = self.step(plan, &fam, f)?;
            steps.push((fam.x, step));
        }
        let mut done = Vec::new();
        for (x, step) in steps {
            match step {
                Step::Nothing => done.push(format!("{}: rules already in place", x.name)),
                Step::Fresh(text) | Step::Replace(text) => {
                    if !text.is_empty() {
                        self.restore(&x, &text)?;
                    }
                    done.push(format!("{}: rules programmed", x.name));
                }
            }
        }
        Ok(done.join("; "))
    }

    /// Succeeds when the live rules (of the variant detection picks) are exactly the plan's,
    /// compared as a rerun compares them.
    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        for f in plan.xtables.families() {
            let fam = self.read_family(plan, f)?;
            let chains = drift(&fam.live, &fam.want, plan.ours.mark);
            if !chains.is_empty() {
                return Err(IptError::NotInPlace { family: f, chains }.into());
            }
        }
        Ok(())
    }

    /// Removes everything of ours from every variant and family found, whatever
    /// `--force-iptables-binary` says (that flag chooses where an apply writes; a clean
    /// removes what any earlier run left). Every failure is collected.
    fn clean(&self, plan: &Plan) -> Result<Vec<String>, BackendError> {
        let variants = [
            Some(XtablesVariant::Legacy),
            Some(XtablesVariant::Nft),
            None,
        ];
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for f in Family::BOTH {
            let planned = expected(plan.xtables.rules(f), f);
            let mut seen: Vec<PathBuf> = Vec::new();
            for v in variants {
                match self.clean_variant(f, v, &planned, plan, &mut seen) {
                    Some(Ok(line)) => done.push(line),
                    Some(Err(e)) => failures.push(e),
                    None => {}
                }
            }
        }
        if failures.is_empty() {
            Ok(done)
        } else {
            Err(BackendError::Clean(failures))
        }
    }
}

impl From<IptError> for BackendError {
    fn from(e: IptError) -> Self {
        BackendError::Failed(Box::new(e))
    }
}
