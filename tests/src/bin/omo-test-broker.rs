//! `omo-test-broker --port P --passwd FILE`: the rumqttd broker the cloud embeds, run as its own
//! process so tests can stop and restart it (an embedded rumqttd cannot be stopped). It checks
//! logins the way the cloud's embedded broker does: the username must equal the client id and
//! the password must match a `user:$7$…` line of FILE. Like rumqttd, it has no topic ACL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use omo_device_config::broker_auth::PasswordHash;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omo-test-broker: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!("usage: omo-test-broker --port P --passwd FILE (missing {name})")
            })
    };
    let port: u16 = arg("--port")?.parse()?;
    let text = std::fs::read_to_string(arg("--passwd")?)?;
    let mut users = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("passwd line {}: expected user:$7$…", i + 1))?;
        let hash: PasswordHash = hash
            .parse()
            .map_err(|e| anyhow::anyhow!("passwd line {}: {e}", i + 1))?;
        users.insert(user.to_owned(), hash);
    }
    let users = Arc::new(users);
    let mut server = ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 64 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    server.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let users = users.clone();
        async move { client_id == user && users.get(&user).is_some_and(|h| h.verify(&pass)) }
    });
    let config = Config {
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    Broker::new(config).start()?;
    Ok(())
}
