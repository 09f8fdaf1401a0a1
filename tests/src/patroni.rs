//! A throwaway highly available PostgreSQL for the failover test: one etcd member and two
//! Patroni nodes (a primary and a synchronous streaming replica) on loopback, from Debian's
//! `patroni` and `etcd-server` packages and PostgreSQL's server programs. Where they are not
//! installed the test says so and passes, unless `OMO_PATRONI_TESTS=required` (CI).
//!
//! Everything runs under one small shell (as the `postgres` user when we are root, as
//! PostgreSQL refuses root) that watches our end of a pipe: told `start N` it starts node N,
//! `kill N` kills node N's Patroni and PostgreSQL with SIGKILL (a machine dying); when the
//! pipe closes — this process ended, however it ended — it stops everything and removes the
//! directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use omo_cloud::store::postgres::cluster::{find_binaries, server_account, USER};
use serde_json::Value;

use crate::free_port;

/// The cluster's name in etcd (Patroni's `scope`).
const SCOPE: &str = "omo";
/// Patroni's leader key lives this long without renewal, seconds: the time a dead primary
/// holds the cluster before the replica is promoted (Patroni wants `loop_wait + 2 ×
/// retry_timeout ≤ ttl`; Debian's Patroni 3.0 takes 10, though its documentation gives 20
/// as the least and later versions may raise it: the test's waits allow for that).
const TTL_S: u64 = 10;

/// One Patroni node.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// Patroni's REST API.
    rest: u16,
    /// PostgreSQL's.
    pg: u16,
}

/// A running etcd and two Patroni nodes; dropped, everything stops and the directory goes.
pub struct Patroni {
    root: PathBuf,
    nodes: Vec<Node>,
    password: String,
    shell: Option<(Child, ChildStdin)>,
    http: reqwest::Client,
}

/// Whether `program` is on the `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

impl Patroni {
    /// Starts etcd, then node `n1` (which bootstraps the cluster and leads), then `n2` (a
    /// replica from a base backup), and waits until `n2` is the synchronous standby. `None`
    /// when the programs are missing and the test is not required.
    pub async fn start() -> anyhow::Result<Option<Patroni>> {
        let missing: Vec<&str> = ["patroni", "etcd"]
            .into_iter()
            .filter(|p| !on_path(p))
            .collect();
        let bin = find_binaries();
        if !missing.is_empty() || bin.is_none() {
            let why =
                format!(
                "missing {missing:?}{} (Debian: apt-get install patroni etcd-server postgresql)",
                if bin.is_none() { " and PostgreSQL's server programs" } else { "" }
            );
            if std::env::var("OMO_PATRONI_TESTS").is_ok_and(|v| v == "required") {
                bail!("OMO_PATRONI_TESTS=required, but {why}");
            }
            eprintln!("skipping this Patroni test: {why}");
            return Ok(None);
        }
        let bin = bin.unwrap_or_default();
        let runs_as = server_account().map_err(anyhow::Error::msg)?;
        let root = std::env::temp_dir().join(format!(
            "omo-patroni-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        // Until the shell owns the directory, a failure removes it here.
        let guard = RemoveOnDrop(Some(root.clone()));
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        let nodes = (1..=2)
            .map(|i| {
                Ok(Node {
                    name: format!("n{i}"),
                    rest: free_port()?,
                    pg: free_port()?,
                })
            })
            .collect::<anyhow::Result<Vec<Node>>>()?;
        let etcd = (free_port()?, free_port()?);
        let password = format!("pw-{:016x}", rand::random::<u64>());
        for node in &nodes {
            let config = node_config(&root, &bin, node, etcd.0, &password);
            std::fs::write(root.join(format!("{}.yml", node.name)), config)?;
        }
        if let Some((uid, gid)) = runs_as {
            for entry in std::fs::read_dir(&root)? {
                std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
            }
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }
        let mut shell = Command::new("/bin/sh");
        if let Some((uid, gid)) = runs_as {
            shell.uid(uid).gid(gid);
        }
        let mut child = shell
            .arg("-c")
            .arg(SCRIPT)
            .arg("omo-patroni")
            .arg(&root)
            .arg(etcd.0.to_string())
            .arg(etcd.1.to_string())
            .current_dir(&root)
            .env("HOME", &root)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the Patroni cluster's shell")?;
        let stdin = child.stdin.take().context("stdin is piped")?;
        guard.disarm();
        let mut cluster = Patroni {
            root,
            nodes,
            password,
            shell: Some((child, stdin)),
            http: omo_cloud::tls::http_client_builder()
                .build()
                .context("an HTTP client")?,
        };
        cluster.say("start 1")?;
        cluster
            .until(Duration::from_secs(60), "n1 leads", |m| {
                role(m, "n1") == Some("leader")
            })
            .await?;
        cluster.say("start 2")?;
        cluster
            .until(
                Duration::from_secs(60),
                "n2 is the synchronous standby",
                |m| role(m, "n2") == Some("sync_standby"),
            )
            .await?;
        Ok(Some(cluster))
    }

    fn say(&mut self, what: &str) -> anyhow::Result<()> {
        let (_, stdin) = self.shell.as_mut().context("the cluster is stopped")?;
        writeln!(stdin, "{what}").with_context(|| format!("telling the cluster's shell {what}"))
    }

    /// The members as Patroni's REST API lists them (asked of each node in turn, as one may be
    /// dead).
    pub async fn members(&self) -> Option<Vec<Value>> {
        for node in &self.nodes {
            let url = format!("http://127.0.0.1:{}/cluster", node.rest);
            let Ok(answer) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            else {
                continue;
            };
            if let Ok(body) = answer.json::<Value>().await {
                return body["members"].as_array().cloned();
            }
        }
        None
    }

    /// Waits until `check` holds of the members, or fails with the logs' tails.
    pub async fn until(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let members = self.members().await.unwrap_or_default();
            if check(&members) {
                return Ok(members);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Patroni: not {what} after {within:?}; members {members:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The leader's name now, if there is one.
    pub async fn leader(&self) -> Option<String> {
        let members = self.members().await?;
        members
            .iter()
            .find(|m| m["role"] == "leader" && m["state"] == "running")
            .and_then(|m| m["name"].as_str().map(str::to_owned))
    }

    /// Kills node `name` — its Patroni and its PostgreSQL — with SIGKILL, and waits until its
    /// PostgreSQL port refuses connections.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name)?;
        self.say(&format!("kill {}", name.trim_start_matches('n')))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", node.pg))
            .await
            .is_ok()
        {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{name}'s PostgreSQL still accepts connections\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn node(&self, name: &str) -> anyhow::Result<Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .with_context(|| format!("no node {name}"))
    }

    /// Whether node `name`'s PostgreSQL is a primary (not in recovery), asked of it directly.
    pub async fn is_primary(&self, name: &str) -> anyhow::Result<bool> {
        let node = self.node(name)?;
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(node.pg)
            .user(USER)
            .dbname("postgres")
            .password(&self.password);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
        Ok(!row.get::<_, bool>(0))
    }

    /// The URL of database `db` naming both nodes, following whichever is the primary.
    pub fn url(&self, db: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.pg))
            .collect();
        format!(
            "postgres://{USER}@{}/{db}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Creates database `name` on the primary.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let mut config: tokio_postgres::Config = self.url("postgres").parse()?;
        config.password(&self.password);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        Ok(())
    }

    /// The tails of etcd's and the nodes' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for log in ["etcd.log", "n1.log", "n2.log"] {
            let text = std::fs::read_to_string(self.root.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {log}\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops everything and removes the directory (what dropping it does).
    pub fn stop(&mut self) {
        if let Some((mut child, mut stdin)) = self.shell.take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A directory removed when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The role of member `name`, if it is listed.
fn role<'a>(members: &'a [Value], name: &str) -> Option<&'a str> {
    members
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["role"].as_str())
}

/// The shell that runs the cluster: `$1` the directory, `$2` and `$3` etcd's client and peer
/// ports. A node is killed Patroni first (so it starts nothing again), then its postmaster's
/// children and the postmaster.
const SCRIPT: &str = r#"
root=$1
etcd --name omo --data-dir "$root/etcd" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
    --initial-cluster "omo=http://127.0.0.1:$3" >>"$root/etcd.log" 2>&1 &
etcd=$!
p1= p2=
postmaster() { head -n 1 "$root/data$1/postmaster.pid" 2>/dev/null; }
slay() {
    eval "p=\$p$1"
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    pm=$(postmaster "$1")
    if [ -n "$pm" ]; then
        pkill -9 -P "$pm"; kill -9 "$pm" 2>/dev/null
    else
        # No pid file (PostgreSQL starting, say): by its data directory.
        pkill -9 -f -- "$root/data$1"
    fi
    # Gone with it, so the pid is never read again (it may belong to another process by then).
    rm -f "$root/data$1/postmaster.pid"
    eval "p$1="
}
while read -r verb n; do
    case "$n" in 1|2) ;; *) [ "$verb" = stop ] || continue ;; esac
    case "$verb" in
        start) patroni "$root/n$n.yml" >>"$root/n$n.log" 2>&1 & eval "p$n=\$!" ;;
        kill) slay "$n" ;;
        *) break ;;
    esac
done
for n in 1 2; do eval "p=\$p$n"; [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
i=0
while [ $i -lt 100 ] && { kill -0 "$p1" 2>/dev/null || kill -0 "$p2" 2>/dev/null; }; do
    sleep 0.1; i=$((i + 1))
done
slay 1; slay 2
kill -9 "$etcd" 2>/dev/null
rm -rf "$root"
"#;

/// Node `node`'s Patroni configuration: the DCS settings it bootstraps with (synchronous
/// replication, a short leader TTL), its REST API and PostgreSQL ports, password logins from
/// loopback for the superuser and replication.
fn node_config(root: &Path, bin: &Path, node: &Node, etcd: u16, password: &str) -> String {
    let root = root.display();
    let Node { name, rest, pg } = node;
    format!(
        r#"scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: {TTL_S}
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters:
        max_connections: 200
  initdb:
    - encoding: UTF8
    - no-locale
    - auth: scram-sha-256
  pg_hba:
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {root}/data{n}
  bin_dir: {bin}
  pgpass: {root}/pgpass-{name}
  authentication:
    superuser:
      username: {USER}
      password: {password}
    replication:
      username: replicator
      password: {password}
  parameters:
    unix_socket_directories: {root}
"#,
        n = name.trim_start_matches('n'),
        bin = bin.display(),
    )
}
