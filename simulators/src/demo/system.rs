//! The demo's processes: the fake LINE and FCM servers, the cloud (first on a setup clock to
//! register the shoppers, the campaigns and the stores' keys, then restarted on the day's
//! clock) and one gateway per scenario gateway, reading adverts from its stdin. On PostgreSQL
//! ([`super::OnPostgres`]) with several instances, the day's cloud is that many processes on
//! one database behind a Mosquitto broker with the generated logins and ACL, and the driver's
//! calls go to each instance in turn.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use omo_device_config::Clock;
use serde_json::json;
use tokio::process::{ChildStdin, Command};

use super::Options;
use crate::procs::{
    bin_dir, binary, free_port, futures_unordered, import_site, shared_broker_mqtt, spawn,
    spawn_fake_line, start_mosquitto, wait_port, Api, Proc,
};
use crate::scenario::Scenario;
use crate::synth::{self, Phone, Shopper};
use crate::world::{self, GatewayLogin};

/// The throwaway service-account key the demo's fake FCM trusts.
const FCM_KEY: &str = include_str!("../../fixtures/fcm-service-account.json");

/// The loopback ports the demo's servers listen on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ports {
    pub http: u16,
    pub mqtt: u16,
    pub line: u16,
    pub fcm: u16,
}

/// The secrets the cloud is started with.
struct Secrets {
    admin_token: String,
    marketer_token: String,
    line_secret: String,
    line_token: String,
    member_secret: String,
}

/// The running system and what the day's driver needs of it.
pub(super) struct System {
    /// Where the processes' logs and data are.
    pub dir: PathBuf,
    pub api: Arc<Api>,
    pub procs: Vec<Proc>,
    /// Each gateway's stdin (by its index in `gateways`), where its adverts go.
    pub stdins: Vec<ChildStdin>,
    /// The gateways' ids, in the order of `stdins`.
    pub gateways: Vec<String>,
    /// The day's clock.
    pub clock: Clock,
    pub ports: Ports,
    pub admin_token: String,
    /// A marketer's token: campaigns and reports, no customers.
    pub marketer_token: String,
    pub line_secret: String,
    /// Each shopper's customer id, and their install's token if they have the app.
    pub customer_of: Vec<String>,
    pub install_token: Vec<Option<String>>,
    /// Each store's POS key, and the online shop's key.
    pub pos_keys: HashMap<String, String>,
    pub shop_key: String,
    /// Each store's QR code, in the scenario's order.
    pub qr_codes: Vec<String>,
}

/// Starts the system in `dir` for `shoppers` and sets it up for the day.
pub(super) async fn start(
    opts: &Options,
    dir: &Path,
    shoppers: &[Shopper],
) -> anyhow::Result<System> {
    let s = &opts.scenario;
    let bin_dir = bin_dir(opts.bin_dir.as_deref())?;
    let cloud_bin = binary(&bin_dir, "omo-cloud")?;
    let gateway_bin = binary(&bin_dir, "omo-gateway")?;
    let mut rng = synth::rng(s.run.seed, "demo");
    let secrets = Secrets {
        admin_token: synth::hex_of(&mut rng, 16),
        // Its own stream, so the other secrets stay those of earlier runs of a seed.
        marketer_token: synth::hex_of(&mut synth::rng(s.run.seed, "demo-marketer"), 16),
        line_secret: synth::hex_of(&mut rng, 16),
        line_token: synth::hex_of(&mut rng, 16),
        member_secret: synth::hex_of(&mut rng, 16),
    };
    let ports = Ports {
        http: free_port()?,
        mqtt: free_port()?,
        line: free_port()?,
        fcm: free_port()?,
    };
    let instances = opts.postgres.as_ref().map_or(1, |p| p.instances.max(1));
    let mut http_ports = vec![ports.http];
    for _ in 1..instances {
        http_ports.push(free_port()?);
    }
    let (logins, configs) = write_configs(opts, dir, ports, &http_ports)?;
    import_site(&cloud_bin, &dir.join("site.toml"), &configs[0])?;
    let cloud = Cloud {
        bin: cloud_bin,
        configs: configs.iter().map(|c| c.display().to_string()).collect(),
        http_ports,
        embedded_broker: instances == 1,
        secrets: &secrets,
    };
    let mut procs = Vec::new();
    if !cloud.embedded_broker {
        procs.push(start_mosquitto(dir, ports.mqtt, &logins)?);
        wait_port(ports.mqtt, "Mosquitto", &mut procs).await?;
    }
    start_for_setup(opts, dir, ports, &cloud, &mut procs).await?;
    let mut api = Api::new(
        omo_cloud::tls::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        format!("http://127.0.0.1:{}", ports.http),
        secrets.admin_token.clone(),
    );
    let api_of_setup = Arc::new(Api::new(
        api.http.clone(),
        api.base.clone(),
        api.admin.clone(),
    ));
    if opts.postgres.is_some() {
        let held = api_of_setup
            .admin(reqwest::Method::GET, "/v1/admin/customers?limit=1", None)
            .await?;
        if held["items"].as_array().is_some_and(|i| !i.is_empty()) {
            bail!("--postgres: that database already holds customers: the demo needs an empty one");
        }
    }
    let (customer_of, install_token) =
        register_all(s, &api_of_setup, shoppers, &secrets.member_secret).await?;
    let (pos_keys, shop_key, qr_codes) = set_up_site(s, &api_of_setup).await?;
    api.more = cloud.http_ports[1..]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let api = Arc::new(api);
    // The day: the cloud restarts on the day's clock, which starts in a few seconds.
    let mut setup = procs.pop().context("the cloud process")?;
    // Gone for good (its store lock and ports with it) before the next one starts.
    setup.child.kill().await?;
    let origin = Utc::now() + chrono::Duration::seconds(5);
    let clock = start_for_day(s, dir, ports, &cloud, origin, &mut procs).await?;
    let (stdins, gateways) = start_gateways(
        opts,
        dir,
        (&gateway_bin, ports),
        &logins,
        origin,
        &mut procs,
    )?;
    Ok(System {
        dir: dir.to_owned(),
        api,
        procs,
        stdins,
        gateways,
        clock,
        ports,
        admin_token: secrets.admin_token,
        marketer_token: secrets.marketer_token,
        line_secret: secrets.line_secret,
        customer_of,
        install_token,
        pos_keys,
        shop_key,
        qr_codes,
    })
}

/// Writes the fake FCM's key, the site and each cloud instance's config into `dir`; answers
/// the gateways' logins and the configs' paths (the first instance's first).
fn write_configs(
    opts: &Options,
    dir: &Path,
    ports: Ports,
    http_ports: &[u16],
) -> anyhow::Result<(Vec<GatewayLogin>, Vec<PathBuf>)> {
    let s = &opts.scenario;
    let path = |n: &str| dir.join(n);
    let Ports {
        http: http_port,
        mqtt: mqtt_port,
        line: line_port,
        fcm: fcm_port,
    } = ports;
    std::fs::write(path("fcm-key.json"), FCM_KEY)?;
    let (site, logins) = world::site(s);
    std::fs::write(path("site.toml"), site)?;
    let data = match &opts.postgres {
        None => format!("dir = {:?}", path("data").display().to_string()),
        Some(pg) => format!(
            "engine = \"postgres\"\n[data.postgres]\nurl = {:?}\npool_size = 8",
            pg.url
        ),
    };
    let mut configs = Vec::new();
    for (i, http) in http_ports.iter().enumerate() {
        let n = i + 1;
        let mqtt = if http_ports.len() == 1 {
            format!("listen = \"127.0.0.1:{mqtt_port}\"")
        } else {
            shared_broker_mqtt(mqtt_port, &format!("omo-demo-{n}"))
        };
        let config = path(&if n == 1 {
            "cloud.toml".to_owned()
        } else {
            format!("cloud-{n}.toml")
        });
        std::fs::write(
            &config,
            format!(
                "[data]\ncache_mb = 64\n{data}\n[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\n{mqtt}\n\
                 [line]\napi_base = \"http://127.0.0.1:{line_port}\"\nrate_per_s = 2000\n\
                 [app]\nfcm_base = \"http://127.0.0.1:{fcm_port}\"\nfcm_service_account_file = {key:?}\nfcm_token_url = \"http://127.0.0.1:{fcm_port}/token\"\n\
                 [delivery]\nlink_base = \"http://127.0.0.1:{http_port}\"\n\
                 [profiles]\ntime_zone = \"Asia/Tokyo\"\n\
                 [dashboard]\ntime_zone = {tz:?}\n\
                 [cluster]\ninstance = \"demo-{n}\"\n\
                 [log]\nlevel = \"{level}\"\n",
                tz = s.stores.first().map_or("UTC", |st| st.time_zone.as_str()),
                level = if opts.logs.is_some() { "info,omo_cloud=debug" } else { "warn,omo_cloud=info" },
                key = path("fcm-key.json").display().to_string(),
            ),
        )?;
        configs.push(config);
    }
    Ok((logins, configs))
}

/// How to start the cloud's instances.
struct Cloud<'a> {
    bin: PathBuf,
    /// Each instance's config, the first's first.
    configs: Vec<String>,
    /// Each instance's HTTP port, in the same order.
    http_ports: Vec<u16>,
    /// One instance with its own broker (else Mosquitto serves them).
    embedded_broker: bool,
    secrets: &'a Secrets,
}

impl Cloud<'_> {
    /// Starts instance `i` on `clock`, logging to `log`.
    fn spawn(&self, i: usize, clock: &str, log: &Path) -> anyhow::Result<Proc> {
        let env = [
            ("OMO_CLOUD_ADMIN_TOKEN", self.secrets.admin_token.as_str()),
            (
                "OMO_CLOUD_MARKETER_TOKEN",
                self.secrets.marketer_token.as_str(),
            ),
            (
                "OMO_CLOUD_LINE_CHANNEL_SECRET",
                self.secrets.line_secret.as_str(),
            ),
            (
                "OMO_CLOUD_LINE_CHANNEL_TOKEN",
                self.secrets.line_token.as_str(),
            ),
            (
                "OMO_CLOUD_MEMBER_LINK_SECRET",
                self.secrets.member_secret.as_str(),
            ),
        ];
        let name = if i == 0 {
            "omo-cloud".to_owned()
        } else {
            format!("omo-cloud {}", i + 1)
        };
        spawn(
            &name,
            &self.bin,
            &["run", "--config", &self.configs[i], "--clock", clock],
            &env,
            log,
        )
    }
}

/// Starts the fake servers and the cloud's first instance for the setup, and waits for their
/// ports. Shoppers register on the day's clock running at ×1 an hour before the day starts, so
/// however long that takes, the day then starts on time. The cloud is the last process.
async fn start_for_setup(
    opts: &Options,
    dir: &Path,
    ports: Ports,
    cloud: &Cloud<'_>,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    let s = &opts.scenario;
    let sim_bin = std::env::current_exe()?;
    let setup_clock = format!(
        "{}@1",
        (s.run.start - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    procs.push(spawn_fake_line(
        ports.line,
        &cloud.secrets.line_token,
        &dir.join("fake-line.log"),
    )?);
    procs.push(spawn(
        "fake FCM",
        &sim_bin,
        &[
            "fake-fcm",
            "--listen",
            &format!("127.0.0.1:{}", ports.fcm),
            "--service-account",
            &dir.join("fcm-key.json").display().to_string(),
        ],
        &[],
        &dir.join("fake-fcm.log"),
    )?);
    procs.push(cloud.spawn(0, &setup_clock, &dir.join("cloud-setup.log"))?);
    let mut waits = vec![
        (ports.line, "the fake LINE server"),
        (ports.fcm, "the fake FCM server"),
        (ports.http, "the cloud's HTTP API"),
    ];
    if cloud.embedded_broker {
        waits.push((ports.mqtt, "the cloud's broker"));
    }
    for (port, what) in waits {
        wait_port(port, what, procs).await?;
    }
    Ok(())
}

/// Registers every shopper (eight at once); answers their customer ids and install tokens.
async fn register_all(
    s: &Scenario,
    api: &Arc<Api>,
    shoppers: &[Shopper],
    member_secret: &str,
) -> anyhow::Result<(Vec<String>, Vec<Option<String>>)> {
    eprintln!(
        "omo-sim demo: {:?}: registering {} shoppers…",
        s.run.name,
        shoppers.len()
    );
    let registering = std::time::Instant::now();
    let mut customer_of = vec![String::new(); shoppers.len()];
    let mut install_token = vec![None::<String>; shoppers.len()];
    let registrations = futures_unordered(
        shoppers.iter().enumerate().map(|(i, sh)| {
            let api = api.clone();
            let member_secret = member_secret.to_owned();
            let sh = sh.clone();
            async move { register(&api, &sh, &member_secret).await.map(|r| (i, r)) }
        }),
        8,
    )
    .await?;
    for (i, (customer, token)) in registrations {
        customer_of[i] = customer;
        install_token[i] = token;
    }
    eprintln!(
        "omo-sim demo: registered in {:.1} s",
        registering.elapsed().as_secs_f64()
    );
    Ok((customer_of, install_token))
}

/// Puts the scenario's campaigns and takes a POS key and the QR code of each store, and the
/// online shop's key.
async fn set_up_site(
    s: &Scenario,
    api: &Api,
) -> anyhow::Result<(HashMap<String, String>, String, Vec<String>)> {
    for c in &s.campaigns {
        let id = c["id"].as_str().unwrap_or_default();
        api.admin(
            reqwest::Method::PUT,
            &format!("/v1/admin/campaigns/{id}"),
            Some(c),
        )
        .await?;
    }
    let mut pos_keys = HashMap::new();
    for st in &s.stores {
        let k = api
            .admin(
                reqwest::Method::POST,
                &format!("/v1/admin/stores/{}/pos-keys", st.id),
                None,
            )
            .await?;
        pos_keys.insert(
            st.id.to_string(),
            k["key"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let shop_key = api
        .admin(reqwest::Method::POST, "/v1/admin/ecommerce-keys", None)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut qr_codes = Vec::new();
    for st in &s.stores {
        let q = api
            .admin(
                reqwest::Method::GET,
                &format!("/v1/admin/stores/{}/qr", st.id),
                None,
            )
            .await?;
        qr_codes.push(q["code"].as_str().unwrap_or_default().to_owned());
    }
    Ok((pos_keys, shop_key, qr_codes))
}

/// Starts the cloud again on the day's clock (the day starts at `origin`); answers the clock.
async fn start_for_day(
    s: &Scenario,
    dir: &Path,
    ports: Ports,
    cloud: &Cloud<'_>,
    origin: chrono::DateTime<Utc>,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<Clock> {
    let clock_spec = format!(
        "{}@{}@{}",
        s.run.start.to_rfc3339_opts(SecondsFormat::Millis, true),
        s.run.speed,
        origin.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let clock = Clock::from_spec(&clock_spec.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    // The killed process's store lock goes with it; the new one waits for it.
    for i in 0..cloud.configs.len() {
        let log = match i {
            0 => dir.join("cloud.log"),
            i => dir.join(format!("cloud-{}.log", i + 1)),
        };
        procs.push(cloud.spawn(i, &clock_spec, &log)?);
    }
    for port in &cloud.http_ports {
        wait_port(*port, "the cloud's HTTP API", procs).await?;
    }
    if cloud.embedded_broker {
        wait_port(ports.mqtt, "the cloud's broker", procs).await?;
    }
    Ok(clock)
}

/// Starts a gateway for each login, reading adverts from its stdin, on its own clock (off by
/// its offset and running fast or slow by its drift) from `origin`; answers their stdins and
/// ids.
fn start_gateways(
    opts: &Options,
    dir: &Path,
    (gateway_bin, ports): (&Path, Ports),
    logins: &[GatewayLogin],
    origin: chrono::DateTime<Utc>,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<(Vec<ChildStdin>, Vec<String>)> {
    let s = &opts.scenario;
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for l in logins {
        let gdir = dir.join(format!("gw-{}", l.gateway));
        std::fs::create_dir_all(&gdir)?;
        let config = gdir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[identity]\nstore = \"{}\"\ngateway = \"{}\"\n[broker]\nurl = \"mqtt://127.0.0.1:{}\"\npassword = \"{}\"\nsigning_key = \"{}\"\n\
                 [scan]\nsource = \"replay\"\nreplay_file = \"-\"\n[data]\ndir = {:?}\n[log]\nlevel = \"{}\"\n",
                l.store, l.gateway, ports.mqtt, l.password, l.signing_key, gdir.join("data").display().to_string(),
                if opts.logs.is_some() { "info,omo_gateway=debug" } else { "warn" }
            ),
        )?;
        let log = std::fs::File::create(gdir.join("gateway.log"))?;
        let g = s
            .stores
            .iter()
            .flat_map(|st| &st.gateways)
            .find(|g| g.id.as_str() == l.gateway)
            .context("a login without its gateway")?;
        let gateway_clock = format!(
            "{}@{}@{}",
            (s.run.start + chrono::Duration::milliseconds((g.clock_offset_s * 1000.0) as i64))
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            s.run.speed * (1.0 + g.clock_drift_ppm / 1e6),
            origin.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let mut child = Command::new(gateway_bin)
            .args([
                "run",
                "--config",
                &config.display().to_string(),
                "--clock",
                &gateway_clock,
            ])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", gateway_bin.display()))?;
        stdins.push(child.stdin.take().context("gateway stdin")?);
        procs.push(Proc {
            name: format!("gateway {}", l.gateway),
            child,
        });
    }
    Ok((stdins, logins.iter().map(|l| l.gateway.clone()).collect()))
}

/// Registers a shopper: the customer (member id, LINE user, consent) and, with the app, an
/// install; returns the customer id and the install's token.
async fn register(
    api: &Api,
    sh: &Shopper,
    member_secret: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let body = json!({
        "member_id": sh.member_id,
        "line_user": sh.line_user,
        "consent": {"line": sh.consent_line, "push": sh.consent_push, "webhook": false, "location": true},
        "attributes": {"name": format!("Shopper {}", &sh.member_id[2..6])},
    });
    let c = api
        .admin(reqwest::Method::POST, "/v1/admin/customers", Some(&body))
        .await?;
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    if !sh.app {
        return Ok((id, None));
    }
    let mut install = json!({
        "platform": if sh.phone == Phone::Ios { "ios" } else { "android" },
        "member_id": sh.member_id,
        "member_sig": omo_cloud::secrets::hmac_hex(member_secret.as_bytes(), sh.member_id.as_bytes()),
        "push_token": sh.push_token,
    });
    if let Some(k) = sh.eid_key {
        install["eid"] = json!({"identity_key": hex::encode(k), "exponent": synth::EID_EXPONENT});
    }
    let (status, b) = api
        .call(
            reqwest::Method::POST,
            "/v1/app/installs",
            Some(&install),
            None,
        )
        .await?;
    if status != 201 {
        bail!("registering an install: {status} {b}");
    }
    Ok((id, b["token"].as_str().map(str::to_owned)))
}
