//! Child processes (servers, nginx): started in their own process group so a
//! terminal's Ctrl-C reaches only the runner, stopped by us with a signal, a
//! bounded grace period and then SIGKILL. `kill_on_drop` is the last resort.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Managed {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    stop_signal: i32,
}

pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with the pid of a child we spawned and still own
        // (not yet reaped, so the pid cannot have been reused).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Managed {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, stop_signal: i32) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
            stop_signal,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The stop signal, `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.pid() {
            signal(pid, self.stop_signal);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "[loadtest] {} did not stop within {grace:?}: killing it",
                self.name
            );
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
    }
}

/// Everything the run started, stopped in reverse order.
#[derive(Default)]
pub struct Children {
    list: Vec<Managed>,
}

impl Children {
    pub fn push(&mut self, m: Managed) -> usize {
        self.list.push(m);
        self.list.len() - 1
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Managed> {
        self.list.get_mut(i)
    }

    pub fn describe(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|m| {
                format!(
                    "{} (pid {}, log {})",
                    m.name,
                    m.pid().map(|p| p.to_string()).unwrap_or_default(),
                    m.log.display()
                )
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub async fn stop_all(&mut self) {
        while let Some(mut m) = self.list.pop() {
            m.stop(Duration::from_secs(10)).await;
        }
    }
}

/// The last `lines` lines of a log file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Raises the open-file limit to its hard maximum (k6 with thousands of VUs,
/// nginx and the servers inherit it).
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
