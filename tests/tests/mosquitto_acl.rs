//! A real Mosquitto 2 broker accepts what `omo-config provision` generates: the gateway logs in
//! with its password (the `$7$` line), may publish only its own `presence`, `status` and
//! `config/ack`, may read only its own `config` and `presence/ack`; and the cloud login from
//! `omo-config provision-cloud` reads every gateway's uplink and writes their downlink.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use omo_device_config::gateway_config::GatewayConfig;
use omo_device_config::topics::{all_gateways_filter, shared_filter};
use omo_device_config::{Channel, GatewayId, StoreId, Topic};
use omo_tests::{binary, Broker, BrokerKind};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

struct Provisioned {
    dir: tempfile::TempDir,
    password_lines: Vec<String>,
    acl: String,
}

fn omo_config(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary("omo-device-config", "omo-config")?)
        .args(args)
        .output()
        .context("running omo-config")?;
    if !out.status.success() {
        bail!(
            "omo-config {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Provisions g1 and g2 in store s1, g3 in store s2, and the cloud, with the real CLI.
fn provision() -> anyhow::Result<Provisioned> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().to_str().context("temp dir is UTF-8")?;
    let mut password_lines = Vec::new();
    let mut acl = String::new();
    for (store, gw) in [("s1", "g1"), ("s1", "g2"), ("s2", "g3")] {
        omo_config(&[
            "provision",
            "--store",
            store,
            "--gateway",
            gw,
            "--out",
            out,
            "--broker-url",
            "mqtt://127.0.0.1:1883",
        ])?;
        password_lines.push(read(dir.path(), &format!("{gw}.passwd"))?.trim().to_owned());
        acl += &read(dir.path(), &format!("{gw}.acl"))?;
        acl += "\n";
    }
    omo_config(&["provision-cloud", "--out", out])?;
    password_lines.push(read(dir.path(), "cloud.passwd")?.trim().to_owned());
    acl += &read(dir.path(), "cloud.acl")?;
    Ok(Provisioned {
        dir,
        password_lines,
        acl,
    })
}

fn read(dir: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"))
}

fn gateway_password(p: &Provisioned, gw: &str) -> anyhow::Result<String> {
    let text = read(p.dir.path(), &format!("{gw}.toml"))?;
    let config = GatewayConfig::from_toml(&text, |_| None)
        .map_err(|e| anyhow::anyhow!("{gw}.toml is invalid: {e:?}"))?;
    config
        .broker
        .password
        .context("provisioned config has a password")
}

fn topic(store: &str, gw: &str, channel: Channel) -> String {
    Topic::new(
        StoreId::new(store).unwrap(),
        GatewayId::new(gw).unwrap(),
        channel,
    )
    .to_string()
}

/// What a client's event loop reports.
#[derive(Debug)]
enum Seen {
    Publish(String, Vec<u8>),
    SubAck(Vec<SubscribeReasonCode>),
}

/// A connected client whose event loop runs on its own task.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Seen>,
}

fn options(port: u16, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(user, "127.0.0.1", port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Connects; fails if the broker refuses.
async fn connect(port: u16, user: &str, password: &str) -> anyhow::Result<Client> {
    let (client, mut eventloop) = AsyncClient::new(options(port, user, password), 64);
    match timeout(WAIT, first_connack(&mut eventloop)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("{user} could not connect: {e}"),
        Err(_) => bail!("{user}: no CONNACK within {WAIT:?}"),
    }
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    Seen::Publish(p.topic.clone(), p.payload.to_vec())
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(s.return_codes),
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    Ok(Client { client, events })
}

async fn first_connack(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

impl Client {
    async fn subscribe(&mut self, filter: &str) -> anyhow::Result<SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        loop {
            match timeout(WAIT, self.events.recv()).await {
                Ok(Some(Seen::SubAck(codes))) => return Ok(codes[0]),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("connection closed while subscribing to {filter}"),
                Err(_) => bail!("no SUBACK for {filter} within {WAIT:?}"),
            }
        }
    }

    async fn publish(&self, topic: &str, payload: &str) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await?;
        Ok(())
    }

    /// (topic, payload) received until a message with payload `end` arrives, plus a short
    /// grace period for anything the broker delivers late.
    async fn received_until_end(&mut self) -> anyhow::Result<BTreeSet<(String, String)>> {
        let mut topics = BTreeSet::new();
        loop {
            match timeout(WAIT, self.events.recv()).await {
                Ok(Some(Seen::Publish(_, p))) if p == b"end" => break,
                Ok(Some(Seen::Publish(t, p))) => {
                    topics.insert((t, String::from_utf8_lossy(&p).into_owned()));
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("connection closed"),
                Err(_) => bail!("the end marker did not arrive within {WAIT:?}; got {topics:?}"),
            }
        }
        while let Ok(Some(seen)) = timeout(Duration::from_millis(300), self.events.recv()).await {
            if let Seen::Publish(t, p) = seen {
                topics.insert((t, String::from_utf8_lossy(&p).into_owned()));
            }
        }
        Ok(topics)
    }
}

fn set(topics: &[String], payload: &str) -> BTreeSet<(String, String)> {
    topics
        .iter()
        .map(|t| (t.clone(), payload.to_owned()))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn provisioned_credentials_and_acl_are_enforced_by_mosquitto() -> anyhow::Result<()> {
    let p = provision()?;
    let broker = Broker::start(BrokerKind::Mosquitto, &p.password_lines, &p.acl)?;
    let port = broker.port;
    let g1_pw = gateway_password(&p, "g1")?;
    let cloud_pw = read(p.dir.path(), "cloud-mqtt-password")?;

    // Credentials: the right password logs in; a wrong one, or another gateway's, does not.
    for (user, pw) in [("g1", "wrong"), ("g2", g1_pw.as_str()), ("nobody", "x")] {
        let (_c, mut el) = AsyncClient::new(options(port, user, pw), 8);
        match timeout(WAIT, first_connack(&mut el)).await {
            Ok(Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ))) => {}
            other => bail!("{user} with a wrong password was not refused: {other:?}"),
        }
    }

    let mut cloud = connect(port, "omo-cloud", cloud_pw.trim()).await?;
    let mut g1 = connect(port, "g1", &g1_pw).await?;
    let g2 = connect(port, "g2", &gateway_password(&p, "g2")?).await?;

    // The cloud may read every gateway's uplink, also through a shared subscription.
    for channel in [Channel::Status, Channel::ConfigAck] {
        let code = cloud.subscribe(&all_gateways_filter(channel)).await?;
        assert!(
            matches!(code, SubscribeReasonCode::Success(_)),
            "{channel:?}: {code:?}"
        );
    }
    let code = cloud
        .subscribe(&shared_filter("omo-cloud", Channel::Presence))
        .await?;
    assert!(
        matches!(code, SubscribeReasonCode::Success(_)),
        "shared presence: {code:?}"
    );

    // Writes: g1 reaches the cloud on its own topics only.
    let own = [
        topic("s1", "g1", Channel::Presence),
        topic("s1", "g1", Channel::Status),
        topic("s1", "g1", Channel::ConfigAck),
    ];
    let foreign = [
        topic("s1", "g2", Channel::Presence),
        topic("s1", "g2", Channel::Status),
        topic("s2", "g3", Channel::Presence),
        topic("s2", "g1", Channel::Presence), // its own id under another store
        topic("s2", "g1", Channel::ConfigAck),
    ];
    for t in foreign.iter().chain(&own) {
        g1.publish(t, "x").await?;
    }
    g1.publish(&own[1], "end").await?;
    let got = cloud.received_until_end().await?;
    assert_eq!(
        got,
        set(&own, "x"),
        "the cloud received exactly g1's own uplink"
    );

    // Reads: g1 subscribes to its own downlink and to others'; only its own arrives.
    for t in [
        topic("s1", "g1", Channel::Config),
        topic("s1", "g1", Channel::PresenceAck),
    ] {
        let code = g1.subscribe(&t).await?;
        assert!(
            matches!(code, SubscribeReasonCode::Success(_)),
            "{t}: {code:?}"
        );
    }
    let others = [
        topic("s1", "g2", Channel::Config),
        topic("s1", "g2", Channel::PresenceAck),
        topic("s2", "g3", Channel::Config),
        topic("s2", "g1", Channel::Config),
    ];
    for t in &others {
        // Mosquitto 2 may grant or refuse the SUBACK; what matters is that nothing is delivered.
        g1.subscribe(t).await?;
    }
    // Reading every gateway's presence must deliver nothing either (checked below).
    g1.subscribe(&all_gateways_filter(Channel::Presence))
        .await?;
    let downlink = [
        topic("s1", "g1", Channel::Config),
        topic("s1", "g1", Channel::PresenceAck),
    ];
    for t in others.iter().chain(&downlink) {
        cloud.publish(t, "x").await?;
    }
    g2.publish(&topic("s1", "g2", Channel::Presence), "x")
        .await?;
    // A gateway cannot write its own downlink either (no forged config or acks).
    for t in &downlink {
        g1.publish(t, "forged").await?;
    }
    cloud.publish(&downlink[0], "end").await?;
    let got = g1.received_until_end().await?;
    assert_eq!(
        got,
        set(&downlink, "x"),
        "g1 received exactly its own downlink, from the cloud"
    );

    // The ACL was generated for the gateway, not only loaded: the broker's log shows denials.
    let log = broker.log_text();
    assert!(
        log.contains("Denied PUBLISH from g1"),
        "mosquitto log:\n{log}"
    );
    Ok(())
}
