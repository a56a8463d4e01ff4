//! Apply through the iptables binaries (the default backend, as upstream).
//!
//! Apply: detect the binaries per family; read the live state with `*-save`; if nothing of
//! ours is there, `*-restore --noflush` the plan's text (one atomic COMMIT per table). If our
//! rules are there and equal the plan (compared exactly, in `iptables-save`'s canonical form),
//! do nothing. If they differ: without `--reconcile` stop with status 1 and name the chains
//! that differ, changing nothing; with `--reconcile` (or `--force-apply`) replace them in one
//! restore per table.
//!
//! Every family is read and every step decided before the first write. A change that takes
//! more than one COMMIT (two tables, or two families) runs under the fail-closed guard
//! (`nl::guard`): a kill in between leaves traffic dropped, not half intercepted, and
//! the next run, finding the guard, replaces what it finds without `--reconcile`. A restore
//! that fails is undone (`undo`): the tables it and earlier restores committed are put back
//! as they were read, so a failed run changes nothing. The detection probe rule upstream can
//! leave in nat INPUT is removed by every apply and clean that finds it.
//!
//! Clean reads the live state of every variant (legacy and nft) and family and removes what
//! is ours in one restore per table; a variant that cannot be read is a failure. (The
//! dispatcher adds the nftables tables and TPROXY routing.)

pub mod detect;
pub mod exec;
pub mod machine;
pub mod state;

use std::path::PathBuf;

use super::api::{Backend, BackendError};
use super::nl::guard;
use super::nl::session::NetlinkError;
use crate::logging;
use crate::options::RunOptions;
use crate::plan::{Family, Plan};
use crate::values::XtablesVariant;
use detect::Xtables;
pub use exec::IptError;
use exec::numeric_only;
use machine::Machine;
use state::{State, drift, expected, has_ours, has_probe, parse_save, replace_text, table_block};

/// The iptables backend: the binaries detection picks (or `--force-iptables-binary`), on a
/// machine (`machine::System`, or one a test describes).
pub struct Iptables {
    machine: Box<dyn Machine>,
    force: Option<XtablesVariant>,
    reconcile: bool,
    force_apply: bool,
    /// In CNI mode, writers lock the namespace's own file instead of the host's
    /// /run/xtables.lock, so pods set up concurrently do not serialize on it (as upstream).
    lock_file: Option<String>,
}

impl Iptables {
    pub fn new(run: &RunOptions, force: Option<XtablesVariant>) -> Iptables {
        Iptables::on(Box::new(machine::System), run, force)
    }

    /// The backend on `machine`.
    pub fn on(
        machine: Box<dyn Machine>,
        run: &RunOptions,
        force: Option<XtablesVariant>,
    ) -> Iptables {
        Iptables {
            machine,
            force,
            reconcile: run.reconcile,
            force_apply: run.force_apply,
            lock_file: run
                .network_namespace
                .as_ref()
                .filter(|_| run.cni_mode)
                .map(|p| p.display().to_string()),
        }
    }

    /// The environment of every writer: the xtables lock file, in CNI mode.
    fn env(&self) -> Vec<(&str, &str)> {
        self.lock_file
            .iter()
            .map(|p| ("XTABLES_LOCKFILE", p.as_str()))
            .collect()
    }

    /// `*-restore` of `text`; with `noflush` (every write but an undo) only the chains the
    /// text names change.
    fn restore(&self, x: &Xtables, text: &str, noflush: bool) -> Result<(), IptError> {
        let mut args = Vec::new();
        if noflush {
            args.push("--noflush");
        }
        args.extend(x.wait_args());
        logging::debug_with(|| format!("{} {} with:\n{text}", x.restore.display(), args.join(" ")));
        self.machine
            .run(&x.restore, &args, Some(text), &self.env())
            .map(|_| ())
    }

    /// Detects the binaries for `f` and reads the live state (detection's `-save`). The
    /// plan's groups are numeric (config resolved them), as `*-save` prints them.
    fn read_family(&self, plan: &Plan, f: Family) -> Result<FamilyState, IptError> {
        let mut x = detect::detect(&*self.machine, f, self.force, &self.env())?;
        let rules = plan.xtables.rules(f).to_vec();
        numeric_only(&rules)?;
        let before = match x.saved.take() {
            Some(text) => text,
            None => self.machine.run(&x.save, &[], None, &[])?,
        };
        let live = parse_save(&before);
        let foreign = state::namesakes(&live, &plan.ours);
        if !foreign.is_empty() {
            return Err(IptError::Namesakes {
                family: f,
                chains: foreign,
            });
        }
        let want = expected(&rules, f);
        Ok(FamilyState {
            x,
            rules,
            before,
            live,
            want,
        })
    }

    /// The restore text that takes one family to the plan, decided before anything changes;
    /// `None` when it is already there. `interrupted`: a guard is up, so our rules are an
    /// interrupted run's and are replaced without `--reconcile`.
    fn step(
        &self,
        plan: &Plan,
        fam: &FamilyState,
        f: Family,
        interrupted: bool,
    ) -> Result<Option<String>, IptError> {
        let ours = &plan.ours;
        let probe = has_probe(&fam.live);
        if !has_ours(&fam.live, ours) && !probe {
            return Ok(Some(crate::render::iptables::restore(&fam.rules)));
        }
        let chains = drift(&fam.live, &fam.want, ours);
        if chains.is_empty() && !probe && !self.force_apply {
            return Ok(None);
        }
        let replace = interrupted || self.reconcile || self.force_apply;
        if !chains.is_empty() && !replace && has_ours(&fam.live, ours) {
            return Err(IptError::Drift { family: f, chains });
        }
        if !has_ours(&fam.live, ours) {
            logging::info(&format!(
                "{}: removing a detection probe rule ({}) an earlier run left in nat INPUT",
                fam.x.name,
                state::PROBE_SPEC
            ));
        } else if interrupted {
            logging::info(&format!(
                "{}: an interrupted run left these rules; replacing them",
                fam.x.name
            ));
        } else if !chains.is_empty() {
            logging::info(&format!(
                "reconciling {}: {}",
                fam.x.name,
                chains.join(", ")
            ));
        }
        Ok(replace_text(&fam.live, &fam.want, Some(&fam.rules), ours))
    }

    /// Whether the guard is up; a kernel without nf_tables has none.
    fn guard_up(&self) -> Result<bool, BackendError> {
        match self.machine.guard_present() {
            Ok(up) => Ok(up),
            Err(NetlinkError::NoNfTables) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Raises the guard for a change of `n` commits to `plan`'s scheme, if that scheme is
    /// fail-closed; returns whether it is up. Without nf_tables the change goes ahead
    /// unguarded, with a warning.
    fn raise_guard_for(&self, plan: &Plan, n: usize) -> bool {
        if n < 2 || !plan.ours.scheme.fail_closed {
            return false;
        }
        match self.machine.raise_guard() {
            Ok(()) => true,
            Err(e) => {
                logging::warn(&format!(
                    "no fail-closed guard for this {n}-transaction change ({e}): a kill part-way can leave the families or tables with different rules until a rerun"
                ));
                false
            }
        }
    }

    /// Puts every table the attempted writes may have changed back as it was read: a table
    /// that existed is restored whole from its `*-save` block, one that did not loses what is
    /// ours. Every failure is collected.
    fn undo(&self, attempted: &[&FamilyState], plan: &Plan) -> Result<(), Vec<String>> {
        let mut failures = Vec::new();
        for fam in attempted {
            let now = match self.machine.run(&fam.x.save, &[], None, &[]) {
                Ok(text) => parse_save(&text),
                Err(e) => {
                    failures.push(format!("{}: {e}", fam.x.name));
                    continue;
                }
            };
            for (table, state) in &now {
                if fam.live.get(table) == Some(state) {
                    continue;
                }
                let (text, noflush) = match table_block(&fam.before, table) {
                    Some(block) => (Some(block), false),
                    None => {
                        let only: State = [(table.clone(), state.clone())].into();
                        (replace_text(&only, &fam.want, None, &plan.ours), true)
                    }
                };
                if let Some(text) = text
                    && let Err(e) = self.restore(&fam.x, &text, noflush)
                {
                    failures.push(format!("{} table {table}: {e}", fam.x.name));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// What a clean of one variant of one family writes: `Ok(None)` when that variant is not
    /// installed, holds nothing of ours, or its kernel side does not exist; `Err` when its
    /// state cannot be read.
    fn clean_read(
        &self,
        f: Family,
        v: Option<XtablesVariant>,
        planned: &State,
        plan: &Plan,
        seen: &mut Vec<PathBuf>,
    ) -> Result<Option<(Xtables, String)>, String> {
        let Some((name, bin, save, restore_bin)) = detect::locate(&*self.machine, f, v) else {
            return Ok(None);
        };
        // Plain `iptables` is usually a link to one of the variants already handled.
        let real = std::fs::canonicalize(&bin).unwrap_or(bin.clone());
        if seen.contains(&real) {
            return Ok(None);
        }
        seen.push(real);
        // Without a legacy table nothing of ours can be there, and `-legacy-save` would fail
        // loading the module: not a failure of the clean.
        if v == Some(XtablesVariant::Legacy) && !self.machine.legacy_tables_exist(f) {
            return Ok(None);
        }
        let live = self
            .machine
            .run(&save, &[], None, &[])
            .map(|text| parse_save(&text))
            .map_err(|e| format!("{name}: cannot read its rules, so cannot clean them: {e}"))?;
        let foreign = state::namesakes(&live, &plan.ours);
        if !foreign.is_empty() {
            let e = IptError::Namesakes {
                family: f,
                chains: foreign,
            };
            return Err(format!("{name}: {e}"));
        }
        let Some(text) = replace_text(&live, planned, None, &plan.ours) else {
            return Ok(None);
        };
        let x = Xtables {
            family: f,
            name,
            bin,
            save,
            restore: restore_bin,
            nf_tables: v == Some(XtablesVariant::Nft),
            version: (1, 8, 0),
            saved: None,
        };
        Ok(Some((x, text)))
    }
}

/// How many transactions a restore text makes: one per COMMIT.
fn commits(text: &str) -> usize {
    text.lines().filter(|l| l.trim_end() == "COMMIT").count()
}

/// One family as it is and as the plan wants it.
struct FamilyState {
    x: Xtables,
    rules: Vec<crate::plan::XtRule>,
    /// `*-save` output as read, for an undo.
    before: String,
    live: State,
    want: State,
}

impl Backend for Iptables {
    /// Reads every family first, then writes: a family whose rules differ stops the apply
    /// before anything changed. A failed write is undone.
    fn apply(&self, plan: &Plan) -> Result<String, BackendError> {
        let interrupted = self.guard_up()?;
        let mut fams = Vec::new();
        for f in plan.xtables.families() {
            let fam = self.read_family(plan, f)?;
            logging::info(&format!("using {} ({})", fam.x.name, fam.x.bin.display()));
            let text = self.step(plan, &fam, f, interrupted)?;
            fams.push((fam, text));
        }
        // The ipsets the rules match before the rules (a restore naming a missing set fails);
        // a set made here and left by a failed restore is empty and matched by nothing.
        sets::ensure(plan)?;
        let n: usize = fams
            .iter()
            .filter_map(|(_, t)| t.as_deref())
            .map(commits)
            .sum();
        let raised = !interrupted && self.raise_guard_for(plan, n);
        let mut done = Vec::new();
        for (i, (fam, text)) in fams.iter().enumerate() {
            let Some(text) = text else {
                done.push(format!("{}: rules already in place", fam.x.name));
                continue;
            };
            let text = faults::inject(i, text);
            if let Err(e) = self.restore(&fam.x, &text, true) {
                let attempted: Vec<&FamilyState> = fams[..=i].iter().map(|(f, _)| f).collect();
                return Err(match self.undo(&attempted, plan) {
                    Ok(()) if raised => self
                        .machine
                        .lower_guard()
                        .map_or_else(Into::into, |()| e.into()),
                    Ok(()) => e.into(),
                    Err(left) => BackendError::Failed(
                        std::iter::once(format!("{e}; undoing what it committed failed"))
                            .chain(left)
                            .chain(raised.then(|| {
                                format!(
                                    "{} stays up: the pod's traffic is dropped until a rerun",
                                    guard::TEXT
                                )
                            }))
                            .collect::<Vec<_>>()
                            .join("; ")
                            .into(),
                    ),
                });
            }
            done.push(format!("{}: rules programmed", fam.x.name));
        }
        if raised || interrupted {
            self.machine.lower_guard()?;
        }
        Ok(done.join("; "))
    }

    /// Succeeds when the live rules (of the variant detection picks) are exactly the plan's,
    /// compared as a rerun compares them, and no interrupted run's guard is up.
    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let missing = sets::missing(plan)?;
        if !missing.is_empty() {
            return Err(BackendError::Failed(
                format!("missing: {}", missing.join("; ")).into(),
            ));
        }
        for f in plan.xtables.families() {
            let fam = self.read_family(plan, f)?;
            let mut chains = drift(&fam.live, &fam.want, &plan.ours);
            if has_probe(&fam.live) {
                chains.push(format!(
                    "nat/INPUT (a detection probe rule, {})",
                    state::PROBE_SPEC
                ));
            }
            if !chains.is_empty() {
                return Err(IptError::NotInPlace { family: f, chains }.into());
            }
        }
        if self.guard_up()? {
            return Err(BackendError::Failed(
                format!("{} is up: an interrupted run left the pod's traffic dropped (a rerun lowers it)", guard::TEXT).into(),
            ));
        }
        Ok(())
    }

    /// Removes everything of ours from every variant and family found, whatever
    /// `--force-iptables-binary` says (that flag chooses where an apply writes; a clean
    /// removes what any earlier run left), under the guard when that takes more than one
    /// commit. Every failure is collected.
    fn clean(&self, plan: &Plan) -> Result<Vec<String>, BackendError> {
        let variants = [
            Some(XtablesVariant::Legacy),
            Some(XtablesVariant::Nft),
            None,
        ];
        let mut writes = Vec::new();
        let mut failures = Vec::new();
        for f in Family::BOTH {
            let planned = expected(plan.xtables.rules(f), f);
            let mut seen: Vec<PathBuf> = Vec::new();
            for v in variants {
                match self.clean_read(f, v, &planned, plan, &mut seen) {
                    Ok(Some(w)) => writes.push(w),
                    Ok(None) => {}
                    Err(e) => failures.push(e),
                }
            }
        }
        let n: usize = writes.iter().map(|(_, t)| commits(t)).sum();
        let raised = self.raise_guard_for(plan, n);
        let mut done = Vec::new();
        for (x, text) in &writes {
            match self.restore(x, text, true) {
                Ok(()) => {
                    let lines = text.lines().filter(|l| l.starts_with('-')).count();
                    done.push(format!("{}: removed {lines} lines of ours", x.name));
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        // Clean lowers the guard whatever happened: what stays is less interception, and
        // the failures are reported.
        if raised || self.guard_up().unwrap_or(false) {
            match self.machine.lower_guard() {
                Ok(()) if !raised => {
                    done.push(format!("lowered an interrupted run's {}", guard::TEXT))
                }
                Ok(()) => {}
                Err(e) => failures.push(e.to_string()),
            }
        }
        // The ipsets after the rules that match them (the kernel refuses to destroy a set in
        // use).
        match sets::destroy(plan) {
            Ok((gone, left)) => {
                done.extend(gone);
                failures.extend(left);
            }
            Err(e) => failures.push(e.to_string()),
        }
        if failures.is_empty() {
            Ok(done)
        } else {
            Err(BackendError::Clean(failures))
        }
    }
}

/// Members of ipsets, each with its owner's comment: an add is `-exist` (another owner's
/// member becomes ours: its comment is replaced), a remove takes out only a member with our
/// comment; a member without a comment was not made this way and is a conflict (nothing
/// changes). Each set must exist (made by an apply).
pub fn change_members(
    members: &[(crate::plan::AddrSet, std::net::IpAddr)],
    comment: &str,
    add: bool,
) -> Result<Vec<(std::net::IpAddr, crate::backend::api::MemberOutcome)>, BackendError> {
    use crate::backend::api::MemberOutcome as O;
    use crate::backend::nl::ipset::Ipset;
    let mut s = Ipset::open()?;
    let mut plan = Vec::new();
    let mut foreign = Vec::new();
    for (set, a) in members {
        let Some(live) = s.members(set.name)? else {
            return Err(BackendError::Failed(
                format!(
                    "ipset {} does not exist: its rules' apply makes it",
                    set.name
                )
                .into(),
            ));
        };
        let theirs = live
            .iter()
            .find(|m| m.addr == *a)
            .map(|m| m.comment.clone());
        let o = match (add, theirs) {
            (_, Some(None)) => {
                foreign.push(format!(
                    "member {a} of ipset {} (no comment: not made by meshtables or upstream's agent)",
                    set.name
                ));
                continue;
            }
            (true, Some(Some(c))) if c == comment => O::Kept,
            (true, Some(Some(c))) => O::TookOver(c),
            (true, None) => O::Added,
            (false, Some(Some(c))) if c == comment => O::Removed,
            (false, Some(Some(c))) => O::LeftOthers(c),
            (false, None) => O::Absent,
        };
        plan.push((*set, *a, o));
    }
    if !foreign.is_empty() {
        return Err(BackendError::Failed(
            format!(
                "not ours, left in place (nothing was changed): {}",
                foreign.join("; ")
            )
            .into(),
        ));
    }
    let mut out = Vec::new();
    for (set, a, o) in plan {
        match o {
            O::Added | O::TookOver(_) => s.add(set.name, a, comment)?,
            O::Removed => s.del(set.name, a)?,
            _ => {}
        }
        out.push((a, o));
    }
    Ok(out)
}

/// A plan's named sets as ipsets `hash:ip` with comments, over netlink (`nl::ipset`).
mod sets {
    use crate::backend::api::BackendError;
    use crate::backend::nl::ipset::{Ipset, IpsetError};
    use crate::plan::{Family, Plan};

    impl From<IpsetError> for BackendError {
        fn from(e: IpsetError) -> Self {
            BackendError::Failed(Box::new(e))
        }
    }

    /// Makes each set the plan's rules match (kept, members and all, when it exists).
    pub fn ensure(plan: &Plan) -> Result<(), BackendError> {
        if plan.sets.is_empty() {
            return Ok(());
        }
        let mut s = Ipset::open()?;
        for set in &plan.sets {
            s.create_hash_ip(set.name, set.family == Family::V6)?;
        }
        Ok(())
    }

    /// The plan's sets that are missing, or are not what an apply makes.
    pub fn missing(plan: &Plan) -> Result<Vec<String>, BackendError> {
        if plan.sets.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = Ipset::open()?;
        let mut out = Vec::new();
        for set in &plan.sets {
            let v6 = set.family == Family::V6;
            match s.header(set.name)? {
                None => out.push(format!("ipset {} (hash:ip with comments)", set.name)),
                Some(h) if !h.is_hash_ip(v6) => out.push(format!(
                    "ipset {} as an apply makes it, hash:ip with comments of its family (it is {}, nfproto family {}, {})",
                    set.name,
                    h.kind,
                    h.family,
                    if h.comments { "with comments" } else { "without comments" }
                )),
                Some(_) => {}
            }
        }
        Ok(out)
    }

    /// Destroys each of the scheme's sets that exists and is what an apply makes (`hash:ip`
    /// with comments, of its family), members and all; a set of our name of another type or
    /// family is another's, left and named in the second list.
    pub fn destroy(plan: &Plan) -> Result<(Vec<String>, Vec<String>), BackendError> {
        if plan.ours.sets.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut s = Ipset::open()?;
        let (mut gone, mut left) = (Vec::new(), Vec::new());
        for set in &plan.ours.sets {
            match s.header(set.name)? {
                None => {}
                Some(h) if !h.is_hash_ip(set.family == Family::V6) => left.push(format!(
                    "not ours, left in place: ipset {} is {}, nfproto family {}, {} (an apply makes hash:ip with comments of its family)",
                    set.name,
                    h.kind,
                    h.family,
                    if h.comments { "with comments" } else { "without comments" }
                )),
                Some(_) if s.destroy(set.name)? => {
                    gone.push(format!("ipset destroy {}", set.name));
                }
                Some(_) => {}
            }
        }
        Ok((gone, left))
    }
}

/// Test-only fault injection (cargo feature `test-faults`, which only the tests enable):
/// with `MESHTABLES_TEST_FAULT=fail-family-N`, the restore of the N-th family written (from 0)
/// ends with a COMMIT the kernel refuses, after its own tables committed, to prove that a
/// failed apply is undone whole.
#[cfg(feature = "test-faults")]
mod faults {
    pub fn inject(i: usize, text: &str) -> String {
        match std::env::var("MESHTABLES_TEST_FAULT") {
            Ok(f) if f == format!("fail-family-{i}") => {
                format!("{text}*nat\n-A MESHTABLES_NO_SUCH_CHAIN -j RETURN\nCOMMIT\n")
            }
            _ => text.to_string(),
        }
    }
}

#[cfg(not(feature = "test-faults"))]
mod faults {
    pub fn inject(_i: usize, text: &str) -> String {
        text.to_string()
    }
}

impl From<IptError> for BackendError {
    fn from(e: IptError) -> Self {
        BackendError::Failed(Box::new(e))
    }
}
