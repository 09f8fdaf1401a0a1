//! `omo-config`: validate config and site files, provision gateways and the cloud's broker
//! login, and compute Eddystone-EIDs. Exit codes: 0 success, 1 invalid input found, 2 usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use omo_device_config::eid::{eid, MAX_EXPONENT};
use omo_device_config::gateway_config::GatewayConfig;
use omo_device_config::problems::{FileProblems, Problem};
use omo_device_config::provision::{provision_cloud, provision_gateway, GatewayOptions};
use omo_device_config::site::Site;
use omo_device_config::{GatewayId, StoreId};

#[derive(Parser)]
#[command(
    name = "omo-config",
    version,
    about = "omo device contract tools: validate, provision, eid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check gateway config and site files; prints one line per problem as FILE:KEY: REASON.
    Validate {
        /// Files to check. `.json` is a site file; a TOML file is a gateway config if it has
        /// [identity], a site file if it has [[stores]].
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat every file as this kind instead of guessing.
        #[arg(long, value_enum)]
        kind: Option<FileKind>,
    },
    /// Create a gateway's config with fresh credentials; print its broker and registry entries.
    Provision {
        #[arg(long)]
        store: String,
        #[arg(long)]
        gateway: String,
        /// Directory for GATEWAY.toml (mode 0600) and GATEWAY.{passwd,acl,registry.toml}.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The broker the gateway connects to: mqtts://host:port (or mqtt:// on loopback).
        #[arg(long)]
        broker_url: String,
        /// The gateway's data directory on its own machine.
        #[arg(long, default_value = "/var/lib/omo-gateway")]
        data_dir: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create the cloud's login for an external broker; print its password line and ACL.
    ProvisionCloud {
        #[arg(long, default_value = "omo-cloud")]
        username: String,
        /// Write cloud.passwd, cloud.acl and cloud-mqtt-password (mode 0600) here instead of
        /// printing the password.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the Eddystone-EID (16 hex digits) for an identity key and beacon time.
    Eid {
        /// The 16-byte identity key as 32 hex digits.
        #[arg(long)]
        identity_key: String,
        /// Rotation exponent K (0..=15): a new EID every 2^K seconds.
        #[arg(long)]
        exponent: u8,
        /// The beacon's 32-bit time counter, seconds.
        #[arg(long)]
        time: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FileKind {
    Gateway,
    Site,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, kind } => validate(&files, kind),
        Command::Provision {
            store,
            gateway,
            out,
            broker_url,
            data_dir,
            force,
        } => provision(&store, &gateway, &out, broker_url, data_dir, force).map(|()| true),
        Command::ProvisionCloud { username, out } => {
            cloud(&username, out.as_deref()).map(|()| true)
        }
        Command::Eid {
            identity_key,
            exponent,
            time,
        } => print_eid(&identity_key, exponent, time).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("omo-config: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints every problem of every file; returns whether all were valid.
fn validate(files: &[PathBuf], kind: Option<FileKind>) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut out = std::io::stdout().lock();
    for path in files {
        match check_file(path, kind) {
            Ok(what) => writeln!(out, "{}: ok ({what})", path.display())?,
            Err(problems) => {
                all_ok = false;
                writeln!(out, "{problems}")?;
            }
        }
    }
    Ok(all_ok)
}

fn check_file(path: &Path, kind: Option<FileKind>) -> Result<&'static str, FileProblems> {
    let file = path.display().to_string();
    let fail = |problems: Vec<Problem>| FileProblems {
        file: file.clone(),
        problems,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![Problem::new("", format!("cannot read: {e}"))]))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let kind = match kind {
        Some(k) => k,
        None if json => FileKind::Site,
        None => guess_kind(&text).map_err(|m| fail(vec![Problem::new("", m)]))?,
    };
    match kind {
        FileKind::Gateway => GatewayConfig::from_toml(&text, |k| std::env::var(k).ok())
            .map(|_| "gateway config")
            .map_err(fail),
        FileKind::Site => Site::parse(&text, json).map(|_| "site").map_err(fail),
    }
}

fn guess_kind(text: &str) -> Result<FileKind, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
        match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        }
    })?;
    // Count the top-level keys each schema knows, so a typo in one section name still lets
    // the file be checked (and the typo reported) as what it obviously is.
    let score = |known: &[&str]| table.keys().filter(|k| known.contains(&k.as_str())).count();
    match (score(&GatewayConfig::SECTIONS), score(&Site::KEYS)) {
        (0, 0) => Err("cannot tell the kind: a gateway config has [identity], [broker], [data]…; a site file [[stores]]… (or pass --kind)".into()),
        (g, s) if g >= s => Ok(FileKind::Gateway),
        _ => Ok(FileKind::Site),
    }
}

fn provision(
    store: &str,
    gateway: &str,
    out: &Path,
    broker_url: String,
    data_dir: String,
    force: bool,
) -> anyhow::Result<()> {
    let opts = GatewayOptions {
        store: StoreId::new(store).context("--store")?,
        gateway: GatewayId::new(gateway).context("--gateway")?,
        broker_url,
        data_dir,
    };
    let p = provision_gateway(&opts);
    // Never hand out a file the gateway would refuse.
    GatewayConfig::from_toml(&p.config_toml, |_| None).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the generated config is invalid: {}", lines.join("; "))
    })?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = [
        (format!("{gateway}.toml"), &p.config_toml, true),
        (
            format!("{gateway}.passwd"),
            &format!("{}\n", p.password_line),
            false,
        ),
        (format!("{gateway}.acl"), &p.acl, false),
        // The registry entry holds the signing key.
        (format!("{gateway}.registry.toml"), &p.registry_entry, true),
    ];
    if !force {
        for (name, _, _) in &files {
            let path = out.join(name);
            if path.exists() {
                bail!("{} exists; pass --force to replace it", path.display());
            }
        }
    }
    for (name, text, secret) in &files {
        write_file(&out.join(name), text, *secret)?;
    }
    println!(
        "# wrote {}\n# Mosquitto password file line:\n{}\n# Mosquitto ACL block:\n{}# Cloud registry entry (site file):\n{}",
        out.join(&files[0].0).display(),
        p.password_line,
        p.acl,
        p.registry_entry
    );
    Ok(())
}

fn cloud(username: &str, out: Option<&Path>) -> anyhow::Result<()> {
    GatewayId::new(username).context("--username")?;
    let c = provision_cloud(username);
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            write_file(
                &dir.join("cloud.passwd"),
                &format!("{}\n", c.password_line),
                false,
            )?;
            write_file(&dir.join("cloud.acl"), &c.acl, false)?;
            write_file(&dir.join("cloud-mqtt-password"), &c.password, true)?;
            println!(
                "# password written to {}",
                dir.join("cloud-mqtt-password").display()
            );
        }
        None => println!(
            "# the cloud's broker password (keep it secret): {}",
            c.password
        ),
    }
    println!(
        "# Mosquitto password file line:\n{}\n# Mosquitto ACL block:\n{}",
        c.password_line, c.acl
    );
    Ok(())
}

fn print_eid(identity_key: &str, exponent: u8, time: u32) -> anyhow::Result<()> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(identity_key.trim(), &mut key)
        .map_err(|_| anyhow::anyhow!("--identity-key must be 32 hex digits (16 bytes)"))?;
    if exponent > MAX_EXPONENT {
        bail!("--exponent {exponent} is out of range 0..={MAX_EXPONENT}");
    }
    println!("{}", hex::encode(eid(&key, exponent, time)));
    Ok(())
}

/// Writes a file; a secret one is created readable by its owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only when the file is created; an existing file keeps its mode otherwise.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
