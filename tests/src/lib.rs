//! Harness for omo's end-to-end tests: find the workspace's real binaries, pick free loopback
//! ports, and run real brokers as child processes that are killed and cleaned up on drop.
//! Every wait is bounded.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod cloud;
pub mod cloud_stub;
pub mod instances;
pub mod load;
pub mod patroni;
pub mod postgres;
pub mod scenario;
pub mod system;

/// The directory cargo puts workspace binaries in: beside this executable, or one up from a
/// test executable in `deps/`.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("the executable has no directory")?;
    Ok(match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    })
}

/// Path of a workspace binary, built (or found up to date) by cargo once per test process,
/// so a test never runs a stale binary. Every workspace binary is built in one `cargo build`
/// with the features `cargo test --workspace` resolved (this crate's dependencies switch the
/// cloud's and the gateway's `failpoints` on), so under `cargo test` it reuses what the test
/// build compiled instead of compiling each binary's dependencies again with other features.
pub fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let dir = target_dir()?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if dir.file_name().is_some_and(|d| d == "release") {
            // Benchmark tools: the binaries alone (building every test in release is slow).
            cmd.arg("--release");
        } else {
            // With the tests, so dev-dependencies' features are resolved as `cargo test` does.
            cmd.arg("--tests");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("could not build the workspace's binaries ({cmd:?})");
        }
        *built = true;
    }
    if !path.exists() {
        bail!("{package} has no binary {name} at {}", path.display());
    }
    Ok(path)
}

/// The gateway binary, with its crash-test failpoints compiled in (inactive unless
/// `FAILPOINTS` names one; this crate's dependency on omo-gateway switches them on).
pub fn gateway_binary() -> anyhow::Result<PathBuf> {
    binary("omo-gateway", "omo-gateway")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `port`, or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listened on 127.0.0.1:{port} within {timeout:?}")
}

pub use omo_sim::procs::mosquitto_path;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Debian's Mosquitto 2, with the generated password file and ACL.
    Mosquitto,
    /// rumqttd (what the cloud embeds) in its own process: passwords, no ACL.
    Rumqttd,
}

/// A real broker on a loopback port, with password lines and (Mosquitto only) an ACL. It can
/// be stopped and restarted on the same port; it is killed on drop.
pub struct Broker {
    pub kind: BrokerKind,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker of `kind` on a free port.
    pub fn start(kind: BrokerKind, password_lines: &[String], acl: &str) -> anyhow::Result<Broker> {
        Broker::start_with(kind, password_lines, acl, None)
    }

    /// Starts Mosquitto with a TLS listener using `(ca, cert, key)` PEM texts.
    pub fn start_tls(
        password_lines: &[String],
        acl: &str,
        pems: (&str, &str, &str),
    ) -> anyhow::Result<Broker> {
        Broker::start_with(BrokerKind::Mosquitto, password_lines, acl, Some(pems))
    }

    fn start_with(
        kind: BrokerKind,
        password_lines: &[String],
        acl: &str,
        tls: Option<(&str, &str, &str)>,
    ) -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        std::fs::write(dir.path().join("passwd"), password_lines.join("\n") + "\n")?;
        std::fs::write(dir.path().join("acl"), acl)?;
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf)?;
        writeln!(f, "listener {port} 127.0.0.1")?;
        writeln!(f, "allow_anonymous false")?;
        writeln!(f, "password_file {}", dir.path().join("passwd").display())?;
        writeln!(f, "acl_file {}", dir.path().join("acl").display())?;
        writeln!(f, "persistence false")?;
        writeln!(f, "max_packet_size 65536")?;
        if let Some((ca, cert, key)) = tls {
            for (name, pem) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
                std::fs::write(dir.path().join(name), pem)?;
            }
            writeln!(f, "cafile {}", dir.path().join("ca.pem").display())?;
            writeln!(f, "certfile {}", dir.path().join("server.pem").display())?;
            writeln!(f, "keyfile {}", dir.path().join("server.key").display())?;
        }
        // stderr, not a log file: run as root, Mosquitto drops to its own user before opening it.
        writeln!(f, "log_dest stderr")?;
        writeln!(f, "log_type all")?;
        drop(f);
        let log = dir.path().join("broker.log");
        let mut broker = Broker {
            kind,
            port,
            child: None,
            dir,
            log,
        };
        broker.restart()?;
        Ok(broker)
    }

    /// Stops the broker (SIGKILL: an outage, not a graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port (after [`Broker::stop`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match self.kind {
            BrokerKind::Mosquitto => {
                let mut c = Command::new(mosquitto_path()?);
                c.arg("-c").arg(self.dir.path().join("mosquitto.conf"));
                c
            }
            BrokerKind::Rumqttd => {
                let mut c = Command::new(binary("omo-tests", "omo-test-broker")?);
                c.args(["--port", &self.port.to_string(), "--passwd"])
                    .arg(self.dir.path().join("passwd"));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {:?}", self.kind))?;
        self.child = Some(child);
        if let Err(e) = wait_for_port(self.port, Duration::from_secs(10)) {
            bail!("{e}; {:?} log:\n{}", self.kind, self.log_text());
        }
        Ok(())
    }

    /// What the broker has logged so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process of the test (a gateway, a cloud), with its stderr in a log file; killed on
/// drop so a failing test leaves nothing running.
pub struct Process {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `program` with `args`; stdout and stderr go to a log file.
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Process> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("process.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Process {
            child,
            log,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("TERM")?;
        self.wait_exit(timeout)
            .context("the process did not exit after SIGTERM")
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "process still running after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL), as a power cut would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends a signal by name (`INT`, `TERM`, …).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.child.id());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program ARGS` to its end, its output in files under `dir`, killing it after `limit`
/// (a hang fails the test with what it wrote to stderr); returns its status, stdout and
/// stderr.
pub fn run_bounded(
    program: &Path,
    args: &[&str],
    dir: &Path,
    limit: Duration,
) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    run_bounded_with(program, args, dir, limit, &[])
}

/// [`run_bounded`] with environment variables added.
pub fn run_bounded_with(
    program: &Path,
    args: &[&str],
    dir: &Path,
    limit: Duration,
    env: &[(&str, &str)],
) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    let (out, err) = (dir.join("out.txt"), dir.join("err.txt"));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM first, so the program stops its own children; SIGKILL if it will not.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            child.wait()?;
            bail!(
                "{} {args:?} ran over {} s:\n{}",
                program.display(),
                limit.as_secs(),
                std::fs::read_to_string(&err)?
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok((
        status,
        std::fs::read_to_string(&out)?,
        std::fs::read_to_string(&err)?,
    ))
}

/// Runs `omo-sim demo ARGS` with `env` added (10 minutes at most) and returns its report;
/// fails unless it exits 0.
pub fn run_demo(
    sim: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let args: Vec<&str> = std::iter::once("demo")
        .chain(args.iter().copied())
        .collect();
    let (status, stdout, stderr) =
        run_bounded_with(sim, &args, dir, Duration::from_secs(600), env)?;
    assert!(
        status.success(),
        "{args:?} failed ({status:?}):\n{stdout}\n{stderr}"
    );
    Ok(stdout)
}

/// "A Saturday at two stores" shortened for a test: a 3-hour day of `population` shoppers at
/// `speed`, with the expectations scaled to it: at least `min_visits` visits and `min_offers`
/// offers, platform shares within `share_tolerance`, and the lift shown but not checked (too
/// few customers to read it).
pub fn short_saturday(
    population: u32,
    speed: u32,
    (min_visits, min_offers): (u32, u32),
    share_tolerance: f64,
) -> String {
    omo_sim::scenario::SATURDAY
        .replacen(
            "population = 4000",
            &format!("population = {population}"),
            1,
        )
        .replacen("hours = 10.0", "hours = 3.0", 1)
        .replacen("speed = 600.0", &format!("speed = {speed}.0"), 1)
        .replacen("min_visits = 300", &format!("min_visits = {min_visits}"), 1)
        .replacen("min_offers = 50", &format!("min_offers = {min_offers}"), 1)
        .replacen("lift_covers_truth = true", "lift_covers_truth = false", 1)
        .replacen("lift_excludes_zero = true", "lift_excludes_zero = false", 1)
        .replacen(
            "platform_share_tolerance = 0.05",
            &format!("platform_share_tolerance = {share_tolerance}"),
            1,
        )
}
