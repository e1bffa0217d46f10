//! `poolvisor serve`: the supervisor and its admin endpoint, until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use poolvisor_actors::{ShutdownReport, Supervisor};

use crate::admin::AdminServer;
use crate::config::{AdminSettings, Config};

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The supervisor refused to start (a bad pool, or a pool down with `fail_fast`).
    #[error("{0}")]
    Start(#[from] poolvisor_actors::StartError),
    /// The admin endpoint could not bind.
    #[error("admin endpoint on {addr}: {source}")]
    Bind {
        /// Where it tried.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// A running supervisor with its admin endpoint.
#[derive(Debug)]
pub struct Serving {
    /// The supervisor.
    pub supervisor: Supervisor,
    /// Its admin endpoint.
    pub admin: AdminServer,
}

impl Serving {
    /// Starts `config`'s pools and serves the admin endpoint on `listen` (or the file's
    /// `[admin] listen`).
    pub async fn start(config: &Config, listen: Option<SocketAddr>) -> Result<Serving, ServeError> {
        let supervisor = config.builder().start().await?;
        let settings = AdminSettings {
            listen: listen.unwrap_or(config.admin.listen),
            token: config.admin.token.clone(),
        };
        let admin = match AdminServer::start(supervisor.clone(), &settings).await {
            Ok(admin) => admin,
            Err(source) => {
                let _ = supervisor.shutdown().await;
                return Err(ServeError::Bind {
                    addr: settings.listen,
                    source,
                });
            }
        };
        Ok(Serving { supervisor, admin })
    }

    /// Stops accepting admin requests, then shuts the supervisor down: drains every
    /// pool (waiting up to `deadline` for lent connections) and closes every connection.
    pub async fn stop(
        self,
        deadline: Duration,
    ) -> Result<ShutdownReport, poolvisor_actors::ControlError> {
        drop(self.admin);
        self.supervisor.shutdown_within(deadline).await
    }
}

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere) and says which.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
