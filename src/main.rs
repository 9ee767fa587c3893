//! The `medsyn` binary: parse arguments, run the subcommand, report errors as `error: ...` (exit code 1).

use clap::Parser;

fn main() {
    let cli = medsyn::cli::Cli::parse();
    if let Err(e) = medsyn::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
