#!/bin/sh
# Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/
# (gitignored). Run from anywhere; works from the repository root.
set -eu
cd "$(dirname "$0")/../.."
cargo run --quiet --manifest-path tests/fuzz/Cargo.toml --example make_seeds -- tests/fuzz/corpus
