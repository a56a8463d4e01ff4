//! meshtables binary: everything happens in `cmd::main_with`; this only wires the process
//! (argv, environment, machine, stdout) to it.

use meshtables::{cmd, config::ProcessEnv, host::System};

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let code = cmd::main_with(args, &ProcessEnv, &System, &mut std::io::stdout().lock());
    std::process::exit(code);
}
