//! Named trials for the custom test harnesses (libtest-mimic): every case is a test of its own
//! that `cargo test NAME` runs alone and the harness counts. A trial lists what it needs
//! (root, programs, `../shared`); when something is missing it is reported as ignored with
//! the reason, and under `CI=true` it fails instead, so a broken environment cannot pass.
//!
//! A suite lists the same trials whatever the machine has: what is missing decides whether a
//! trial runs, never whether it exists. Each suite declares how many trials it has
//! (`declare`), and two trials of its own check the list it built: `count::declared` (the
//! numbers, in all and per group) and `count::unique_names`; a refactor that loses cases, or
//! a case list that shrinks without `../shared`, fails them.

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// What a trial needs from the machine.
#[derive(Clone, Copy, Default)]
pub struct Needs {
    pub root: bool,
    pub programs: &'static [&'static str],
    pub shared: bool,
}

/// Nothing.
pub const NOTHING: Needs = Needs {
    root: false,
    programs: &[],
    shared: false,
};

/// Root and these programs.
pub const fn root(programs: &'static [&'static str]) -> Needs {
    Needs {
        root: true,
        programs,
        shared: false,
    }
}

/// `../shared` beside the checkout (Istio's goldens), as CI has it.
pub const SHARED: Needs = Needs {
    root: false,
    programs: &[],
    shared: true,
};

impl Needs {
    /// These needs and `../shared` too.
    pub const fn and_shared(self) -> Needs {
        Needs {
            shared: true,
            ..self
        }
    }
}

/// Why a trial cannot run here, if it cannot.
pub fn missing(needs: &Needs) -> Option<String> {
    if needs.root && !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces, netfilter)".into());
    }
    if let Some(p) = needs.programs.iter().find(|p| super::which(p).is_none()) {
        return Some(format!("needs {p}, which is not installed"));
    }
    if needs.shared && super::shared_path().is_none() {
        return Some(
            "needs ../shared beside the checkout (Istio's goldens, as CI has them)".into(),
        );
    }
    None
}

/// The trials of one test binary.
#[derive(Default)]
pub struct Trials {
    list: Vec<Trial>,
    declared: Option<(usize, Vec<(&'static str, usize)>)>,
}

impl Trials {
    pub fn new() -> Trials {
        Trials::default()
    }

    /// A trial `name` that runs `body` (a panic or a failed assertion fails it) when `needs`
    /// are met.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        needs: Needs,
        body: impl FnOnce() + Send + 'static,
    ) {
        self.add_if(name, needs, || None, body);
    }

    /// Like `add`, with one more precondition: `also` says what else is missing, if anything.
    pub fn add_if(
        &mut self,
        name: impl Into<String>,
        needs: Needs,
        also: fn() -> Option<String>,
        body: impl FnOnce() + Send + 'static,
    ) {
        self.list.push(Trial::ignorable_test(name, move || {
            if let Some(reason) = missing(&needs).or_else(also) {
                if super::in_ci() {
                    return Err(Failed::from(format!(
                        "{reason}, and CI=true does not allow skipping it"
                    )));
                }
                return Ok(Completion::ignored_with(reason));
            }
            body();
            Ok(Completion::Completed)
        }));
    }

    /// Declares the suite's size: `total` trials besides the two `count::` trials, and for each
    /// `(group, n)`, `n` trials named `group` or `group::...`. The numbers are the suite's
    /// own literals (configurations × variants, say), never counted from the lists the trials
    /// are built from.
    pub fn declare(&mut self, total: usize, groups: &[(&'static str, usize)]) {
        self.declared = Some((total, groups.to_vec()));
    }

    /// Adds the `count::` trials, runs the trials the command line selects and exits with the
    /// harness's status. A suite that declared nothing fails `count::declared`.
    pub fn run(mut self) -> ! {
        let names: Vec<String> = self.list.iter().map(|t| t.name().to_string()).collect();
        let declared = self.declared.take();
        let built = names.clone();
        self.add("count::declared", NOTHING, move || {
            let Some((total, groups)) = declared else {
                panic!("this suite declares no trial count (Trials::declare)")
            };
            let mut wrong = Vec::new();
            if built.len() != total {
                wrong.push(format!("{} trials, {total} declared", built.len()));
            }
            for (group, n) in &groups {
                let have = built
                    .iter()
                    .filter(|t| *t == group || t.starts_with(&format!("{group}::")))
                    .count();
                if have != *n || *n == 0 {
                    wrong.push(format!("{have} trials in {group}, {n} declared"));
                }
            }
            assert!(wrong.is_empty(), "{}", wrong.join("; "));
        });
        self.add("count::unique_names", NOTHING, move || {
            let mut seen = std::collections::BTreeMap::new();
            for n in &names {
                *seen.entry(n.as_str()).or_insert(0) += 1;
            }
            let twice: Vec<&str> = seen
                .iter()
                .filter(|(_, c)| **c > 1)
                .map(|(n, _)| *n)
                .collect();
            assert!(twice.is_empty(), "more than one trial named {twice:?}");
        });
        libtest_mimic::run(&Arguments::from_args(), self.list).exit()
    }
}
