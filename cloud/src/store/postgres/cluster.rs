//! A throwaway PostgreSQL cluster for tests and trials: `initdb` into a fresh directory, the
//! server on a free loopback port, password authentication for one superuser. PostgreSQL
//! refuses to run as root, so as root the cluster runs as the `postgres` user (Debian's
//! package makes it) or `nobody`.
//!
//! The server runs under a small shell that also watches our end of a pipe: when this process
//! exits, even by a crash or SIGKILL, the pipe closes and the shell stops the server and
//! removes the directory. Nothing outlives the test that started it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser of a local cluster.
pub const USER: &str = "omo";

/// A running local cluster; dropped, it stops and its directory is removed.
pub struct LocalCluster {
    root: PathBuf,
    port: u16,
    password: String,
    bin: PathBuf,
    /// Who runs the server: (uid, gid), or None for this process's user.
    runs_as: Option<(u32, u32)>,
    /// The watching shell, and our end of its pipe.
    server: Option<(Child, ChildStdin)>,
}

/// Where PostgreSQL's server programs are: `$OMO_PG_BIN`, the `PATH`, or the newest of
/// Debian's `/usr/lib/postgresql/*/bin`. A symlinked `initdb` leads to the directory it links
/// into, where its siblings (`pg_isready`) are.
pub fn find_binaries() -> Option<PathBuf> {
    let dir = search_binaries()?;
    let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
    real.parent().map(Path::to_path_buf)
}

fn search_binaries() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("OMO_PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has(d)) {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// Who a PostgreSQL server started from this process must run as, (uid, gid): None for this
/// process's own user; as root (which PostgreSQL refuses), the `postgres` user or `nobody`.
pub fn server_account() -> Result<Option<(u32, u32)>, String> {
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !is_root {
        return Ok(None);
    }
    account("postgres")
        .or_else(|| account("nobody"))
        .map(Some)
        .ok_or_else(|| "running as root and no `postgres` or `nobody` user to run as".into())
}

/// The (uid, gid) of `name` in `/etc/passwd`.
fn account(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A loopback port nobody listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalCluster {
    /// Starts a cluster, or says why it cannot (no PostgreSQL installed, initdb failed, …).
    pub fn start() -> Result<LocalCluster, String> {
        let bin = find_binaries().ok_or(
            "no PostgreSQL server programs (initdb, postgres) on PATH, in $OMO_PG_BIN or under \
             /usr/lib/postgresql (Debian: apt-get install postgresql)",
        )?;
        let runs_as = server_account()?;
        let root = std::env::temp_dir().join(format!(
            "omo-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", root.display());
        std::fs::create_dir(&root).map_err(|e| io("creating", e))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("securing", e))?;
        if let Some((uid, gid)) = runs_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|e| io("handing over", e))?;
        }
        let mut cluster = LocalCluster {
            root,
            port: 0,
            password: format!("pw-{:016x}", rand::random::<u64>()),
            bin,
            runs_as,
            server: None,
        };
        cluster.init()?;
        cluster.serve()?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.runs_as {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA").current_dir(&self.root);
        c
    }

    fn init(&self) -> Result<(), String> {
        let pwfile = self.root.join("pw");
        std::fs::write(&pwfile, &self.password).map_err(|e| format!("writing {pwfile:?}: {e}"))?;
        if let Some((uid, gid)) = self.runs_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(|e| format!("handing over {pwfile:?}: {e}"))?;
        }
        let out = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.root.join("data"))
            .args(["--username", USER, "--auth", "scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .args(["--encoding", "UTF8", "--no-locale", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Starts the server under its watching shell and waits until it accepts connections.
    fn serve(&mut self) -> Result<(), String> {
        for _ in 0..5 {
            self.port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
            // The shell stops the server when told, or when our end of the pipe closes (this
            // process ended, however it ended), and removes the directory unless told "keep"
            // (a failed start, tried again on another port); "pause" stops the server and
            // "resume" starts it again, as a database outage would.
            let script = r#"
                serve() {
                    "$1/postgres" -D "$2/data" -p "$3" -c listen_addresses=127.0.0.1 \
                        -c unix_socket_directories="$2" -c fsync=off -c full_page_writes=off \
                        -c max_connections=200 >>"$2/log" 2>&1 &
                    pid=$!
                }
                serve "$@"
                said=
                while read -r said; do
                    case "$said" in
                        pause) kill -INT "$pid" 2>/dev/null; wait "$pid"; pid= ;;
                        resume) [ -n "$pid" ] || serve "$@" ;;
                        *) break ;;
                    esac
                done
                [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid"
                [ "$said" = keep ] || rm -rf "$2"
            "#;
            let _ = std::fs::remove_file(self.root.join("log"));
            let mut shell = Command::new("/bin/sh");
            if let Some((uid, gid)) = self.runs_as {
                shell.uid(uid).gid(gid);
            }
            let mut child = shell
                .arg("-c")
                .arg(script)
                .arg("omo-pg")
                .arg(&self.bin)
                .arg(&self.root)
                .arg(self.port.to_string())
                .current_dir(&self.root)
                // Its own process group: a Ctrl-C at the terminal ends the tests, whose end
                // then stops the server, rather than killing the shell before it cleans up.
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting postgres: {e}"))?;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            if self.wait_ready(&mut child) {
                self.server = Some((child, stdin));
                return Ok(());
            }
            let _ = stdin.write_all(b"keep\n");
            drop(stdin);
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(self.root.join("log")).unwrap_or_default();
        Err(format!(
            "postgres did not start; its log ends: {}",
            log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        ))
    }

    /// Whether our server accepts connections within a while (false: it stopped, say because
    /// the port was taken meanwhile). Asked over its own unix socket, so another server on the
    /// port cannot answer for it.
    fn wait_ready(&self, child: &mut Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let log = self.root.join("log");
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // (Not any FATAL: a client connecting while it starts logs one.)
            if text.contains("could not bind") {
                return false;
            }
            if self.accepts() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the server, as an outage would (the cluster and its data stay); `resume` starts
    /// it again on the same port.
    pub fn pause(&mut self) -> Result<(), String> {
        let (_, stdin) = self.server.as_mut().ok_or("the cluster is stopped")?;
        stdin
            .write_all(b"pause\n")
            .map_err(|e| format!("pausing: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.accepts() {
            if Instant::now() > deadline {
                return Err("postgres did not stop".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the paused server again and waits until it accepts connections.
    pub fn resume(&mut self) -> Result<(), String> {
        let (mut child, mut stdin) = self.server.take().ok_or("the cluster is stopped")?;
        let _ = std::fs::remove_file(self.root.join("log"));
        let sent = stdin.write_all(b"resume\n");
        let ready = sent.is_ok() && self.wait_ready(&mut child);
        self.server = Some((child, stdin));
        if ready {
            Ok(())
        } else {
            Err("postgres did not start again".into())
        }
    }

    /// Whether the server answers now.
    fn accepts(&self) -> bool {
        // As this process's user: as the server's, it would look for files in our $HOME.
        Command::new(self.bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&self.root)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of database `db` on this cluster, without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Turns TLS on with the server certificate `cert_pem` and its key `key_pem` (plain
    /// connections are still accepted); new connections may use it once the server has read
    /// its configuration again, shortly after this returns.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        for (name, pem, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = self.root.join(name);
            let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
            std::fs::write(&path, pem).map_err(io)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
            if let Some((uid, gid)) = self.runs_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io)?;
            }
        }
        // One statement each: ALTER SYSTEM cannot run in the transaction a batch makes.
        let literal = |name: &str| {
            let path = self.root.join(name).display().to_string();
            format!("'{}'", path.replace('\'', "''"))
        };
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = {}", literal("server.crt")),
            format!("ALTER SYSTEM SET ssl_key_file = {}", literal("server.key")),
            "ALTER SYSTEM SET ssl = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            self.execute(&sql)?;
        }
        Ok(())
    }

    /// Creates database `name` (empty).
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        self.execute(&format!("CREATE DATABASE \"{name}\""))
    }

    /// Runs SQL as the superuser in database `postgres`.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        self.execute_in("postgres", sql)
    }

    /// Runs SQL as the superuser in database `db` (on a thread of its own, so it may be called
    /// from inside an async runtime).
    pub fn execute_in(&self, db: &str, sql: &str) -> Result<(), String> {
        let mut config: tokio_postgres::Config =
            self.url(db).parse().map_err(|e| format!("{e}"))?;
        config.password(&self.password);
        let sql = sql.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| format!("{sql:?}: {e}"))
            })
        })
        .join()
        .map_err(|_| "the SQL thread panicked".to_owned())?
    }

    /// The server's processes now: the postmaster and its children (one per connection and
    /// its background workers), for measuring the database's CPU.
    pub fn processes(&self) -> Vec<u32> {
        let pid_file = self.root.join("data").join("postmaster.pid");
        let Some(main) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let parent_of = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name in parentheses: state, then the parent's pid.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let mut out = vec![main];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                    if parent_of(pid) == Some(main) {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }

    /// Stops the server and removes its directory (what dropping it does).
    pub fn stop(&mut self) {
        if let Some((mut child, mut stdin)) = self.server.take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
