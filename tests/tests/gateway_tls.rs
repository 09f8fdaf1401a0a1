//! The gateway over TLS: Mosquitto with a certificate from a test CA, the gateway trusting that
//! CA through `broker.ca_file` (rustls with the ring provider). Events flow and are acked; a
//! gateway that does not trust the CA never connects.

use std::collections::HashMap;
use std::time::Duration;

use omo_tests::cloud_stub::CloudStub;
use omo_tests::scenario::{
    drained, wait_until, write_replay, GatewayUnderTest, Visit, CLOUD_PASSWORD, CLOUD_USER,
};
use omo_tests::Broker;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

fn pki() -> anyhow::Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate()?;
    let server =
        CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&server_key, &issuer)?;
    Ok((ca_cert.pem(), server.pem(), server_key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_over_tls_to_a_trusted_broker_only() -> anyhow::Result<()> {
    let (ca, cert, key) = pki()?;
    let gut = GatewayUnderTest::new("s1", "g1", 30)?;
    let broker = Broker::start_tls(&gut.password_lines(), &gut.acl(), (&ca, &cert, &key))?;
    // The only listener is TLS, so the cloud stand-in uses it too.
    let cloud = CloudStub::start_tls(
        broker.port,
        CLOUD_USER,
        CLOUD_PASSWORD,
        &ca,
        HashMap::from([("g1".to_owned(), gut.key.clone())]),
    )
    .await?;
    let replay = gut.dir.path().join("visit.jsonl");
    write_replay(
        &replay,
        &[Visit {
            beacon: 1,
            from_s: 0,
            to_s: 120,
        }],
    )?;
    let ca_file = gut.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca)?;
    let config = gut.write_config(broker.port, &replay)?;
    let text = std::fs::read_to_string(&config)?
        .replace("mqtt://127.0.0.1", "mqtts://localhost")
        .replace(
            "keep_alive_s = 5",
            &format!(
                "keep_alive_s = 5\nca_file = {:?}",
                ca_file.display().to_string()
            ),
        );
    std::fs::write(&config, text)?;
    let gw = gut.start(&config)?;
    let ctx = || {
        format!(
            "gateway log:\n{}\nbroker log:\n{}",
            gw.log_text(),
            broker.log_text()
        )
    };
    wait_until(
        Duration::from_secs(60),
        "events over TLS and an empty outbox",
        || cloud.with(|s| s.events.len() >= 2 && drained(s, "g1")),
        ctx,
    )
    .await?;

    // A gateway trusting another CA refuses the broker's certificate and says so.
    let mut gw = gw;
    gw.terminate(Duration::from_secs(10))?;
    let (other_ca, _, _) = pki()?;
    std::fs::write(&ca_file, other_ca)?;
    let gw2 = gut.start(&config)?;
    wait_until(
        Duration::from_secs(20),
        "the broker's certificate to be refused",
        || gw2.log_text().contains("certificate"),
        || gw2.log_text(),
    )
    .await?;
    assert!(
        !gw2.log_text().contains("connected to the broker"),
        "{}",
        gw2.log_text()
    );
    Ok(())
}
