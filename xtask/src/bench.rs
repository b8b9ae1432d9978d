//! `cargo xtask bench`: not written yet (issue 4).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not implemented yet")
}
