//! meshtables binary: everything happens in `cmd::main_with` (or `cni::main` when invoked as
//! `meshtables-cni`); this only wires the process (argv, environment, machine, stdio) to it.

use meshtables::{cmd, cni, config::ProcessEnv, host::System};

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    // Invoked by a container runtime as a CNI plugin (a link named meshtables-cni).
    let argv0 = args.first().and_then(|a| a.to_str()).unwrap_or("");
    if argv0.rsplit('/').next() == Some("meshtables-cni") {
        let code = cni::main(
            &ProcessEnv,
            &System,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        );
        std::process::exit(code);
    }
    let code = cmd::main_with(args, &ProcessEnv, &System, &mut std::io::stdout().lock());
    std::process::exit(code);
}
