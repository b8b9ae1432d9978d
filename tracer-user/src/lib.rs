//! conntrace: every TCP connect attempt on this host, classified from the kernel.
//!
//! The pipeline, one module each: [`kernel`] facts about the running kernel, [`loader`]
//! loads and attaches the eBPF programs, [`decode`] turns ring-buffer bytes into wire
//! records, [`classify`] turns those into [`model::ConnEvent`]s, [`enrich`] adds what
//! procfs and the node's files know (executable, arguments, container, pod), and
//! [`collector`] runs the loop that feeds every record to the [`sinks`]: the record
//! stream, summaries, metrics, verdicts, `diagnose`'s window, [`top`]'s table. Sinks that
//! write go through [`output`], which formats JSON lines or text into a bounded queue that
//! a writer thread empties; [`output::terminal`] escapes whatever text reaches a terminal.
//! [`aggregate`] folds records per (workload, destination), [`diagnose`] explains the
//! failures, [`netns`] opens and checks network namespace files. Everything but `loader`,
//! `kernel`, `collector`, `top`, `netns`, `output`'s writer, server and hook,
//! `diagnose::host` and `enrich`'s readers is pure and tested without root.
pub mod aggregate;
pub mod app;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod config;
pub mod decode;
pub mod diagnose;
pub mod enrich;
pub mod errno;
pub mod exit;
pub mod heartbeat;
pub mod kernel;
pub mod listeners;
pub mod loader;
pub mod model;
pub mod netns;
pub mod output;
pub mod sinks;
pub mod stats;
pub mod top;
