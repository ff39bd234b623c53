//! The processes a benchmark runs next to the load generator: the gateway (release build), Node
//! peers, nginx and nats-server. Each is started on loopback with its output in a log file and
//! stopped (SIGTERM, then SIGKILL) when its handle drops. Memory is read from `/proc`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A process this harness started; stopped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// Extra state to remove when stopped (nginx prefix, NATS store).
    pub cleanup: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("log file {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            cleanup: None,
        })
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Wait for a `listening <port>` line (Node peers print it once bound).
    pub fn wait_listening_line(&mut self, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("listening "))
                .and_then(|p| p.trim().parse().ok())
            {
                return Ok(port);
            }
            if !self.alive() {
                bail!(
                    "{} exited before listening:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not start in time:\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `GET path` on `port` answers 200 (gateway `/readyz`).
    pub fn wait_http_ok(&mut self, port: u16, path: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get_status(port, path).ok() == Some(200) {
                return Ok(());
            }
            if !self.alive() {
                bail!("{} exited:\n{}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready on :{port}{path} in {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until a TCP port accepts connections.
    pub fn wait_tcp(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if !self.alive() {
                bail!("{} exited:\n{}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not listening on :{port}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of this process and its descendants, in KiB.
    pub fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.pid())
    }

    /// Proportional set size (`Pss` of `/proc/PID/smaps_rollup`) of this process and its
    /// descendants, in KiB: shared pages split between the processes that map them.
    pub fn pss_kib(&self) -> u64 {
        tree(self.pid()).iter().map(|p| pss_of(*p)).sum()
    }

    /// CPU time (user + system) of this process and its descendants, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).iter().map(|p| cpu_of(*p)).sum()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM, up to 3 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if self.alive() {
            self.signal("TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.alive() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let Some(dir) = self.cleanup.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (bound and released; the tiny race is acceptable on a test machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A minimal HTTP/1.1 GET; returns the status code.
pub fn http_get_status(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok(code)
}

/// A minimal HTTP/1.1 GET returning the body (gateway `/metrics`).
pub fn http_get_body(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    // Bounded: a process tree here has a handful of members.
    while i < all.len() && all.len() < 64 {
        let parent = all[i];
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        all.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    all
}

/// Resident memory of `root` and its descendants, in KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    tree(root).iter().map(|p| rss_of(*p)).sum()
}

/// Samples the RSS of a process tree every 20 ms on a thread of its own until stopped; the
/// largest sample is the peak.
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    pub fn start(root: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(tree_rss_kib(root));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(tree_rss_kib(root))
        });
        Self { stop, thread }
    }

    /// Stop sampling; the peak in KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn rss_of(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pss_of(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This process's soft limit on open files (children inherit it).
pub fn nofile_limit() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

fn cpu_of(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// `/proc/loadavg`'s first three numbers.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Busy fraction of all CPUs over `window` (from `/proc/stat`), to record contention.
pub fn cpu_busy_sample(window: Duration) -> f64 {
    fn read() -> (u64, u64) {
        let s = fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = s
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (v.iter().sum(), idle)
    }
    let (t0, i0) = read();
    std::thread::sleep(window);
    let (t1, i1) = read();
    let total = t1.saturating_sub(t0).max(1);
    1.0 - (i1.saturating_sub(i0)) as f64 / total as f64
}

/// A helper process of the load generator (`sbbench hold|members|relay ...`) spoken to with
/// lines on stdin and stdout.
pub struct Helper {
    pub proc: Proc,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Helper {
    /// Start this executable with `args`; stderr goes to `log`.
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args);
        Self::spawn_command(name, &mut cmd, log)
    }

    /// Start `cmd` (a Node client script) the same way.
    pub fn spawn_command(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let err = fs::File::create(log).with_context(|| format!("log file {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting helper {name}"))?;
        let stdin = child.stdin.take().context("helper stdin")?;
        let stdout = child.stdout.take().context("helper stdout")?;
        Ok(Self {
            proc: Proc {
                name: name.to_string(),
                child,
                log: log.to_path_buf(),
                cleanup: None,
            },
            stdin,
            stdout: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
        })
    }

    /// Send one command line.
    pub fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// The next line the helper prints, without blocking the async runtime's other tasks.
    pub fn recv_async(&mut self) -> Result<String> {
        tokio::task::block_in_place(|| self.recv())
    }

    /// The next line the helper prints (blocking; helpers bound their own waits).
    pub fn recv(&mut self) -> Result<String> {
        match self.stdout.next() {
            Some(l) => Ok(l?),
            None => bail!(
                "helper {} ended without answering:\n{}",
                self.proc.name,
                self.proc.log_tail()
            ),
        }
    }
}
