//! Named trials for the custom test harnesses (libtest-mimic): every case is a test of its own
//! that `cargo test NAME` runs alone and the harness counts. A trial lists what it needs
//! (root, programs, `../shared`); when something is missing it is reported as ignored with
//! the reason, and under `CI=true` it fails instead, so a broken environment cannot pass.

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

    /// Runs the trials the command line selects and exits with the harness's status.
    pub fn run(self) -> ! {
        libtest_mimic::run(&Arguments::from_args(), self.list).exit()
    }
}
