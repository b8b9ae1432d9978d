#![no_std]
// This file exists so that tracer-user can build-depend on this crate; see Cargo.toml.
