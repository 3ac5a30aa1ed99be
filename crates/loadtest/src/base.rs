//! What every stage shares and that imports nothing of the crate: the
//! runner's log line, the exit codes, the repository's paths and the small
//! file helpers.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The exit codes (cli::USAGE lists them).
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_UNAVAILABLE: u8 = 3;
pub const EXIT_THRESHOLDS: u8 = 4;
pub const EXIT_RULES: u8 = 5;

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[loadtest] {}", msg.as_ref());
}

/// Paths of the repository (the runner is built from it).
pub struct Paths {
    pub root: PathBuf,
    pub k6_dir: PathBuf,
    pub results: PathBuf,
    pub reports: PathBuf,
}

impl Paths {
    /// The repository holding `loadtests/k6`: `LOADTEST_ROOT`, else the
    /// current folder or one above it, else where the runner was built from.
    pub fn locate() -> Result<Self> {
        let is_root = |p: &Path| p.join("loadtests/k6/lib/common.js").is_file();
        let from_env = std::env::var_os("LOADTEST_ROOT").map(PathBuf::from);
        let from_cwd = std::env::current_dir()
            .ok()
            .and_then(|cwd| cwd.ancestors().find(|p| is_root(p)).map(Path::to_path_buf));
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = from_env
            .or(from_cwd)
            .unwrap_or(built)
            .canonicalize()
            .context("locating the repository root")?;
        if !is_root(&root) {
            bail!(
                "{} has no loadtests/k6 (run from the repository, or set LOADTEST_ROOT)",
                root.display()
            );
        }
        Ok(Self {
            k6_dir: root.join("loadtests/k6"),
            results: root.join("loadtests/results"),
            reports: root.join("loadtests/reports"),
            root,
        })
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    if ok.is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string(v)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}
