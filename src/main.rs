//! The `nopescope` command line (src/cli/). Native only: the web page is
//! the `nopescope-web` binary, and on wasm32 this one is an empty program,
//! so that `cargo check --target wasm32-unknown-unknown` builds the crate.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
