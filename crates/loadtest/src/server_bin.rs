//! The commerce-server binary of a run: `--server-bin`, else built with
//! `cargo build --release`; `all` and chaos pin a copy of it.

use crate::base::{log, rel};
use crate::options::RunOptions;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The commerce-server binary of a run and how the report describes it;
/// `all` resolves it once and hands it to every entry, so the server is
/// built once.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    pub path: PathBuf,
    pub text: String,
}

/// `cargo` for a build of the workspace, without the variables `cargo run`
/// gave this binary (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …): build scripts
/// such as ring's watch them, so inheriting them would rebuild those crates
/// on every run and again at the next `cargo run`.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let from_cargo_run = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| key.starts_with(p))
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            );
        if from_cargo_run {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(root);
    cmd
}

async fn cargo_target_dir(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        });
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cargo(root)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("cargo metadata timed out"))??;
    let v: Value = serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    v.get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cargo metadata: no target_directory"))
}

/// `cargo build --release -p commerce-server`; the binary's path.
async fn build_server(root: &Path) -> Result<PathBuf> {
    log("building commerce-server (cargo build --release -p commerce-server)");
    let status = tokio::time::timeout(
        Duration::from_secs(3600),
        cargo(root)
            .args(["build", "--release", "-p", "commerce-server"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .map_err(|_| anyhow!("building commerce-server took more than an hour"))??;
    if !status.success() {
        bail!("cargo build --release -p commerce-server failed");
    }
    let bin = cargo_target_dir(root)
        .await?
        .join("release/commerce-server");
    if !bin.is_file() {
        bail!("built, but {} is not there", bin.display());
    }
    Ok(bin)
}

/// `--server-bin`, else `cargo build --release -p commerce-server`.
pub async fn server_binary(opts: &RunOptions, root: &Path) -> Result<ServerBinary> {
    resolve_server(opts.server_bin.as_deref(), root).await
}

/// `server_bin`, else `cargo build --release -p commerce-server`.
pub async fn resolve_server(server_bin: Option<&Path>, root: &Path) -> Result<ServerBinary> {
    Ok(match server_bin {
        Some(p) => {
            let path = p
                .canonicalize()
                .with_context(|| format!("--server-bin {}", p.display()))?;
            let text = format!("`{}` (given with --server-bin)", path.display());
            ServerBinary { path, text }
        }
        None => {
            let path = build_server(root).await?;
            let text = format!(
                "`{}`, built from {}",
                rel(root, &path),
                git_revision(root).await
            );
            ServerBinary { path, text }
        }
    })
}

/// A copy of a built binary in `dir`, so that builds by others into the
/// shared target folder cannot swap it during a long `all`.
pub fn pin_binary(bin: ServerBinary, dir: &Path, root: &Path) -> ServerBinary {
    let copy = dir.join("commerce-server");
    let copied = std::fs::create_dir_all(dir).and_then(|()| std::fs::copy(&bin.path, &copy));
    match copied {
        Ok(_) => ServerBinary {
            text: format!("{}; run from the copy `{}`", bin.text, rel(root, &copy)),
            path: copy,
        },
        Err(e) => {
            log(format!(
                "could not copy {} to {} ({e}); using it in place",
                bin.path.display(),
                copy.display()
            ));
            bin
        }
    }
}

/// `commit abc1234` or `commit abc1234 + uncommitted changes` of the workspace.
pub(crate) async fn git_revision(root: &Path) -> String {
    async fn git(root: &Path, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => {
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            _ => None,
        }
    }
    match git(root, &["rev-parse", "--short", "HEAD"]).await {
        None => "an unknown revision (no git)".to_owned(),
        Some(rev) => match git(root, &["status", "--porcelain", "--untracked-files=no"]).await {
            Some(changes) if !changes.is_empty() => format!("commit {rev} + uncommitted changes"),
            _ => format!("commit {rev}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::cargo;

    /// `cargo test` gives this test binary the variables `cargo run` gives
    /// the runner; a build the runner starts must not see them.
    #[test]
    fn builds_do_not_inherit_what_cargo_run_set() {
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let cmd = cargo(std::path::Path::new("."));
        let removed: Vec<String> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
        ] {
            assert!(
                removed.iter().any(|k| k == key),
                "{key} not removed: {removed:?}"
            );
        }
        assert!(!removed
            .iter()
            .any(|k| k == "CARGO_HOME" || k == "CARGO_TARGET_DIR"));
    }
}
