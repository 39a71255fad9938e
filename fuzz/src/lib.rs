//! Fuzz support for pgrouter: structure-aware generators for its inputs and the properties the
//! targets in `fuzz_targets/` check. See docs/fuzzing.md.
pub mod gen_config;
pub mod gen_import;
pub mod pools;
pub mod props;
