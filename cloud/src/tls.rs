//! The tree's one TLS crypto provider is ring. HTTP clients (reqwest built without a provider
//! of its own) need it installed as the process default before the first client is built.

/// Installs ring as the process's default rustls provider (once; later calls do nothing).
pub fn install_ring() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder on ring with the system roots.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_ring();
    reqwest::Client::builder()
}
