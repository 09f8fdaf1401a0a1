//! The demo's processes: the fake LINE and FCM servers, the cloud (first on a setup clock to
//! register the shoppers, the campaigns and the stores' keys, then restarted on the day's
//! clock) and one gateway per scenario gateway, reading adverts from its stdin.

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
    bin_dir, binary, free_port, futures_unordered, import_site, spawn, spawn_fake_line, wait_port,
    Api, Proc,
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
    let logins = write_configs(opts, dir, ports)?;
    import_site(&cloud_bin, &dir.join("site.toml"), &dir.join("cloud.toml"))?;
    let cloud = Cloud {
        bin: cloud_bin,
        config: dir.join("cloud.toml").display().to_string(),
        secrets: &secrets,
    };
    let mut procs = start_for_setup(opts, dir, ports, &cloud).await?;
    let api = Arc::new(Api {
        http: omo_cloud::tls::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: format!("http://127.0.0.1:{}", ports.http),
        admin: secrets.admin_token.clone(),
    });
    let (customer_of, install_token) =
        register_all(s, &api, shoppers, &secrets.member_secret).await?;
    let (pos_keys, shop_key, qr_codes) = set_up_site(s, &api).await?;
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
        line_secret: secrets.line_secret,
        customer_of,
        install_token,
        pos_keys,
        shop_key,
        qr_codes,
    })
}

/// Writes the fake FCM's key, the site and the cloud's config into `dir`; answers the
/// gateways' logins.
fn write_configs(opts: &Options, dir: &Path, ports: Ports) -> anyhow::Result<Vec<GatewayLogin>> {
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
    std::fs::write(
        path("cloud.toml"),
        format!(
            "[data]\ndir = {data:?}\ncache_mb = 64\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
             [line]\napi_base = \"http://127.0.0.1:{line_port}\"\nrate_per_s = 2000\n\
             [app]\nfcm_base = \"http://127.0.0.1:{fcm_port}\"\nfcm_service_account_file = {key:?}\nfcm_token_url = \"http://127.0.0.1:{fcm_port}/token\"\n\
             [delivery]\nlink_base = \"http://127.0.0.1:{http_port}\"\n\
             [profiles]\ntime_zone = \"Asia/Tokyo\"\n\
             [dashboard]\ntime_zone = {tz:?}\n\
             [log]\nlevel = \"{level}\"\n",
            tz = s.stores.first().map_or("UTC", |st| st.time_zone.as_str()),
            level = if opts.logs.is_some() { "info,omo_cloud=debug" } else { "warn,omo_cloud=info" },
            data = path("data").display().to_string(),
            key = path("fcm-key.json").display().to_string(),
        ),
    )?;
    Ok(logins)
}

/// How to start the cloud.
struct Cloud<'a> {
    bin: PathBuf,
    config: String,
    secrets: &'a Secrets,
}

impl Cloud<'_> {
    fn spawn(&self, clock: &str, log: &Path) -> anyhow::Result<Proc> {
        let env = [
            ("OMO_CLOUD_ADMIN_TOKEN", self.secrets.admin_token.as_str()),
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
        spawn(
            "omo-cloud",
            &self.bin,
            &["run", "--config", &self.config, "--clock", clock],
            &env,
            log,
        )
    }
}

/// Starts the fake servers and the cloud for the setup, and waits for their ports. Shoppers
/// register on the day's clock running at ×1 an hour before the day starts, so however long
/// that takes, the day then starts on time. The cloud is the last process.
async fn start_for_setup(
    opts: &Options,
    dir: &Path,
    ports: Ports,
    cloud: &Cloud<'_>,
) -> anyhow::Result<Vec<Proc>> {
    let s = &opts.scenario;
    let sim_bin = std::env::current_exe()?;
    let setup_clock = format!(
        "{}@1",
        (s.run.start - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let mut procs = vec![
        spawn_fake_line(
            ports.line,
            &cloud.secrets.line_token,
            &dir.join("fake-line.log"),
        )?,
        spawn(
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
        )?,
        cloud.spawn(&setup_clock, &dir.join("cloud-setup.log"))?,
    ];
    for (port, what) in [
        (ports.line, "the fake LINE server"),
        (ports.fcm, "the fake FCM server"),
        (ports.http, "the cloud's HTTP API"),
        (ports.mqtt, "the cloud's broker"),
    ] {
        wait_port(port, what, &mut procs).await?;
    }
    Ok(procs)
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
    procs.push(cloud.spawn(&clock_spec, &dir.join("cloud.log"))?);
    for (port, what) in [
        (ports.http, "the cloud's HTTP API"),
        (ports.mqtt, "the cloud's broker"),
    ] {
        wait_port(port, what, procs).await?;
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
