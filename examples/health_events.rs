//! Subscribe to health events and react to them while a local server stops and starts.
//! The "server" is a TCP forwarder to an in-process echo service; stopping it closes the
//! port, as a crashed server would.
//!
//! `cargo run --example health_events`

use std::net::SocketAddr;
use std::time::Duration;

use poolvisor::{EventKind, PoolConfig, PoolStatus, Supervisor};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Connections to the server; valid while the server still answers a zero-byte peek.
struct Tcp {
    addr: SocketAddr,
}

impl bb8::ManageConnection for Tcp {
    type Connection = TcpStream;
    type Error = std::io::Error;

    async fn connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.addr).await
    }

    async fn is_valid(&self, conn: &mut TcpStream) -> std::io::Result<()> {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(5), conn.peek(&mut buf)).await {
            Ok(Ok(0)) => Err(std::io::Error::other("closed by the server")),
            Ok(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn has_broken(&self, _: &mut TcpStream) -> bool {
        false
    }
}

/// Listens on `addr` and holds every accepted connection open until aborted.
async fn start_server(addr: SocketAddr) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let mut server = start_server(addr).await?;
    let sup = Supervisor::builder()
        .pool_with_backend(
            "svc",
            "tcp",
            Tcp { addr },
            PoolConfig::default().min_idle(1),
        )
        .start()
        .await?;
    let mut events = sup.subscribe();
    let pool = sup.pool::<Tcp>("svc")?;
    println!("pool is {:?}; stopping the server", pool.status());

    server.abort();
    // Idle connections die with the server; the next checkout finds them dead (after
    // the validation threshold), reconnects fail, and the pool goes Down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    loop {
        match pool.checkout().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                println!("checkout while the server is gone: {e}");
                break;
            }
        }
    }
    let mut restarted = false;
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        let event = event?;
        println!("event #{}: {} {:?}", event.seq, event.pool, event.kind);
        match event.kind {
            EventKind::Down { .. } if !restarted => {
                println!("-> reacting to Down: restarting the server");
                server = start_server(addr).await?;
                restarted = true;
            }
            EventKind::Recovered { down_for } => {
                println!("-> recovered after {down_for:?}");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(pool.status(), PoolStatus::Up);
    drop(pool.checkout().await?);
    println!("checkout works again");
    sup.shutdown().await?;
    server.abort();
    Ok(())
}
