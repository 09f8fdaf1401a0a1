//! What the fake servers share: an axum app served on a bound loopback listener by a task that
//! stops when the fake is dropped.

use std::net::SocketAddr;

use axum::Router;

/// A running server.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `app` on `listener`; `name` says which fake stopped if serving fails.
    pub fn start(
        listener: tokio::net::TcpListener,
        app: Router,
        name: &'static str,
    ) -> std::io::Result<Served> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("{name} stopped: {e}");
            }
        });
        Ok(Served { addr, task })
    }

    /// Runs until the server stops (for the `omo-sim fake-…` commands).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
