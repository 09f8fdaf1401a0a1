//! TLS to the database, on the tree's one crypto provider (ring): with `sslmode=require` in the
//! URL every connection is encrypted and the server's certificate is checked against
//! `[data.postgres] ca_file` (else the system's roots) for the host named in the URL — what
//! libpq calls `verify-full`. Without it, connections are plain TCP (keep the database on a
//! private network then).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Makes a TLS connector per host the pool connects to.
#[derive(Clone)]
pub struct MakeRustls(Arc<rustls::ClientConfig>);

impl MakeRustls {
    /// Trusting the CA certificates in `ca_file` (PEM), or the system's roots without one.
    pub fn new(ca_file: Option<&Path>) -> Result<MakeRustls, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut n = 0;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    n += 1;
                }
                if n == 0 {
                    return Err(format!("{}: no PEM certificate in it", path.display()));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system certificate rustls cannot use is left out, as browsers do.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("no system root certificates: set ca_file".into());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config = config;
        // What PostgreSQL 17 asks of a client that starts TLS at once; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustls(Arc::new(config)))
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.0.clone(),
            name: ServerName::try_from(host.to_owned())?,
        })
    }
}

/// Connects to one host, checking its certificate is for `name`.
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// An encrypted connection to the database.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// None: SCRAM without channel binding, as over plain TCP (the certificate check is what
    /// keeps a man in the middle out); a URL with `channel_binding=require` cannot connect.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::super::cluster::LocalCluster;
    use super::super::{testing, PgStore, Settings};
    use crate::store::{Commit, Space, Store};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A CA's certificate, and a certificate for `localhost` it signed with that one's key.
    fn pki() -> (String, String, String) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// How many of the cloud's sessions are encrypted, and how many are not.
    fn sessions(cluster: &LocalCluster) -> (i64, i64) {
        let mut config: tokio_postgres::Config = cluster.url("postgres").parse().unwrap();
        config.password(cluster.password());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                     FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = 'omo-cloud'",
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        })
    }

    #[test]
    fn with_sslmode_require_every_connection_is_encrypted_to_a_server_the_ca_vouches_for() {
        let cluster = match LocalCluster::start() {
            Ok(c) => c,
            Err(why) if testing::required() => panic!("OMO_POSTGRES_TESTS=required, but {why}"),
            Err(why) => return eprintln!("skipping: {why}"),
        };
        let (ca, cert, key) = pki();
        cluster.enable_tls(&cert, &key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca).unwrap();
        let settings = Settings {
            url: format!(
                "postgres://{}@localhost:{}/postgres?sslmode=require",
                super::super::cluster::USER,
                cluster.port()
            ),
            password: Some(cluster.password().to_owned()),
            ca_file: Some(ca_file.clone()),
            pool_size: 2,
            connect_timeout_ms: 2_000,
            ..Settings::default()
        };
        assert!(settings.problems().is_empty(), "{:?}", settings.problems());
        // The server reads its configuration again shortly after it was changed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match PgStore::open(&settings) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("not yet: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let mut c = Commit::new();
        c.put(Space::Meta, b"tls-check".to_vec(), b"yes".to_vec());
        store.commit(c).unwrap();
        assert_eq!(
            store.get(Space::Meta, b"tls-check").unwrap().as_deref(),
            Some(&b"yes"[..])
        );
        let (encrypted, plain) = sessions(&cluster);
        assert!(
            encrypted > 0 && plain == 0,
            "{encrypted} encrypted, {plain} plain"
        );
        drop(store);

        // A server no trusted CA vouches for is refused, in one line.
        let (other_ca, _, _) = pki();
        let other = dir.path().join("other.pem");
        std::fs::write(&other, other_ca).unwrap();
        let refused = PgStore::open(&Settings {
            ca_file: Some(other),
            ..settings.clone()
        })
        .err()
        .expect("an untrusted server refused")
        .to_string();
        assert!(refused.contains("certificate"), "{refused}");
        assert_eq!(refused.lines().count(), 1, "{refused}");
        // A CA file that is not there is named.
        let missing = PgStore::open(&Settings {
            ca_file: Some(dir.path().join("nowhere.pem")),
            ..settings.clone()
        })
        .err()
        .expect("a missing CA file refused")
        .to_string();
        assert!(
            missing.contains("data.postgres.ca_file") && missing.contains("nowhere.pem"),
            "{missing}"
        );
        // A CA file without sslmode=require would be ignored: refused by key instead.
        let plain = Settings {
            url: cluster.url("postgres"),
            ..settings
        };
        assert_eq!(plain.problems()[0].0, "ca_file");
    }
}
