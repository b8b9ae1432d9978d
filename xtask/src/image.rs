//! `cargo xtask image`: the container image that `deploy/daemonset.yaml` names, built
//! offline and reproducibly.
//!
//! - `FROM scratch` with one file, conntrace linked statically (glibc's static build,
//!   `+crt-static`): nothing to pull, no libc to patch, no shell in the image. conntrace
//!   resolves no names and loads no NSS modules, which is where a static glibc falls short.
//! - Reproducible: Cargo.lock (`--locked`) and the dated eBPF nightly pin the inputs;
//!   `podman build --timestamp $SOURCE_DATE_EPOCH` (the last commit's time unless set)
//!   fixes the image's dates and every file's mtime in the layer; the OCI archive is
//!   written with `tar --sort=name` and fixed owners and times. The same binary gives the
//!   same image digest and the same archive, byte for byte (`tests/tests/deploy.rs`).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{self, cargo_bin, output, target_dir, workspace_root};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct Args {
    /// Put this binary in the image instead of building the static release binary (the
    /// reproducibility test uses whatever binary it has; the DaemonSet needs a static one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The image's name [default: localhost/conntrace:VERSION, as the DaemonSet names it].
    #[arg(long)]
    pub tag: Option<String>,
    /// Where to write the OCI archive [default: TARGET/image/conntrace-VERSION.oci.tar].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    pub tag: String,
    /// The manifest's digest (`sha256:…`), as a registry would address the image.
    pub manifest_digest: String,
    pub archive: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let built = build(args)?;
    println!("image:    {}", built.tag);
    println!("manifest: {}", built.manifest_digest);
    println!("archive:  {}", built.archive.display());
    Ok(())
}

pub fn build(args: &Args) -> anyhow::Result<Built> {
    require_podman()?;
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => {
            crate::setup::run(&crate::setup::Args::toolchain_only())?;
            build_static_release()?
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let tag = args
        .tag
        .clone()
        .unwrap_or_else(|| format!("localhost/conntrace:{version}"));
    let epoch = source_date_epoch()?;
    let image_dir = target_dir()?.join("image");
    let work = image_dir.join(format!("work-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(work.clone());
    let context = work.join("context");
    std::fs::create_dir_all(&context).with_context(|| format!("create {}", context.display()))?;
    std::fs::copy(&binary, context.join("conntrace"))
        .with_context(|| format!("copy {}", binary.display()))?;
    std::fs::write(context.join("Containerfile"), containerfile(version))?;
    util::run(
        Command::new("podman")
            .args(["build", "--pull=never", "--network=none", "--no-cache"])
            .args(["--timestamp", &epoch.to_string()])
            .args(["--format", "oci", "--tag", &tag, "--file"])
            .arg(context.join("Containerfile"))
            .arg(&context),
    )?;
    let layout = work.join("layout");
    util::run(
        Command::new("podman")
            .args(["save", "--format", "oci-dir", "--output"])
            .arg(&layout)
            .arg(&tag),
    )?;
    let manifest_digest = manifest_digest(&layout)?;
    let archive = args
        .out
        .clone()
        .unwrap_or_else(|| image_dir.join(format!("conntrace-{version}.oci.tar")));
    write_archive(&layout, &archive, epoch)?;
    Ok(Built {
        tag,
        manifest_digest,
        archive,
    })
}

/// One file, run as root with the DaemonSet's capabilities (the manifest says which).
fn containerfile(version: &str) -> String {
    format!(
        "FROM scratch\n\
         COPY conntrace /conntrace\n\
         LABEL org.opencontainers.image.title=conntrace \
         org.opencontainers.image.version={version} \
         org.opencontainers.image.source=https://github.com/conntrace/conntrace\n\
         ENTRYPOINT [\"/conntrace\"]\n\
         CMD [\"trace\", \"--output=json\"]\n"
    )
}

fn require_podman() -> anyhow::Result<()> {
    if !util::succeeds("podman", &["--version"]) {
        bail!("podman is not installed (cargo xtask setup installs it)");
    }
    Ok(())
}

/// conntrace in release mode, glibc linked in statically, for this machine's
/// architecture. Its own target directory (`TARGET/<triple>/release`), so that the
/// ordinary release build is left alone.
fn build_static_release() -> anyhow::Result<PathBuf> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let flags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    );
    util::run(
        Command::new(cargo_bin())
            .args(["build", "--release", "--locked", "--target", &triple])
            .args(["--package", "tracer-user", "--bin", "conntrace"])
            .env(flags_var, "-C target-feature=+crt-static")
            .current_dir(workspace_root()),
    )?;
    let binary = target_dir()?.join(&triple).join("release/conntrace");
    // `ldd` says so for a static binary (and fails, which `output` turns into None).
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("run ldd")?;
    let said =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!(
            "{} is not statically linked: {}",
            binary.display(),
            said.trim()
        );
    }
    Ok(binary)
}

/// `SOURCE_DATE_EPOCH` if set, else the time of the last commit.
fn source_date_epoch() -> anyhow::Result<u64> {
    if let Ok(text) = std::env::var("SOURCE_DATE_EPOCH") {
        return text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds"));
    }
    let root = workspace_root();
    let root = root.to_str().context("non-UTF-8 workspace path")?;
    output("git", &["-C", root, "log", "-1", "--format=%ct"])
        .context("no SOURCE_DATE_EPOCH and no git history to take it from")?
        .parse()
        .context("git log: not a time")
}

/// The digest of the one manifest in an OCI layout's `index.json`.
fn manifest_digest(layout: &Path) -> anyhow::Result<String> {
    let index = std::fs::read_to_string(layout.join("index.json"))
        .with_context(|| format!("read {}/index.json", layout.display()))?;
    let index: serde_json::Value = serde_json::from_str(&index).context("index.json")?;
    match index["manifests"].as_array().map(Vec::as_slice) {
        Some([one]) => one["digest"]
            .as_str()
            .map(str::to_owned)
            .context("index.json: a manifest without a digest"),
        _ => bail!("index.json: expected exactly one manifest: {index}"),
    }
}

/// The layout as a tar archive that depends on nothing but its contents: sorted names,
/// fixed owners, modes and times.
fn write_archive(layout: &Path, archive: &Path, epoch: u64) -> anyhow::Result<()> {
    if let Some(dir) = archive.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    util::run(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mode=u+rw,go+r,go-w", "--format=gnu"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("--file")
            .arg(archive)
            .arg("--create")
            .arg("--directory")
            .arg(layout)
            .arg("."),
    )
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containerfile_pulls_nothing() {
        let text = containerfile("1.2.3");
        assert!(text.starts_with("FROM scratch\n"), "{text}");
        assert!(
            text.contains("org.opencontainers.image.version=1.2.3"),
            "{text}"
        );
        assert!(text.contains("ENTRYPOINT [\"/conntrace\"]"), "{text}");
    }

    #[test]
    fn reads_the_manifest_digest_of_a_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:19d6","size":574}]}"#,
        )
        .unwrap();
        assert_eq!(manifest_digest(&dir).unwrap(), "sha256:19d6");
        std::fs::write(dir.join("index.json"), r#"{"manifests":[]}"#).unwrap();
        assert!(manifest_digest(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
