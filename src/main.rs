//! The `flotilla` binary: parse arguments, run the verb, exit with its code.

fn main() {
    std::process::exit(flotilla::cli::main());
}
