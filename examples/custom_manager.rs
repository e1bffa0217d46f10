//! Any `bb8::ManageConnection` plugs in: here, a manager for a tiny line protocol
//! (`PING` -> `PONG`, `ECHO x` -> `x`) served in-process on loopback.
//!
//! `cargo run --example custom_manager`

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use poolvisor::{PoolConfig, Supervisor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One connection of the line protocol.
struct LineConn {
    stream: BufReader<TcpStream>,
    broken: bool,
}

impl LineConn {
    async fn call(&mut self, line: &str) -> io::Result<String> {
        let result = async {
            self.stream
                .get_mut()
                .write_all(format!("{line}\n").as_bytes())
                .await?;
            let mut reply = String::new();
            if self.stream.read_line(&mut reply).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            Ok(reply.trim_end().to_string())
        }
        .await;
        // A failed exchange leaves the stream in an unknown state: never reuse it.
        self.broken |= result.is_err();
        result
    }
}

/// The manager: how to connect, validate and recognise a broken connection.
struct LineManager {
    addr: SocketAddr,
}

impl bb8::ManageConnection for LineManager {
    type Connection = LineConn;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<LineConn> {
        let stream = TcpStream::connect(self.addr).await?;
        Ok(LineConn {
            stream: BufReader::new(stream),
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut LineConn) -> io::Result<()> {
        match conn.call("PING").await?.as_str() {
            "PONG" => Ok(()),
            other => Err(io::Error::other(format!("PING answered {other:?}"))),
        }
    }

    fn has_broken(&self, conn: &mut LineConn) -> bool {
        conn.broken
    }
}

async fn serve() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut lines = BufReader::new(tcp);
                let mut line = String::new();
                while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let reply = match line.trim_end() {
                        "PING" => "PONG".to_string(),
                        l => l.strip_prefix("ECHO ").unwrap_or("ERR unknown").to_string(),
                    };
                    if lines
                        .get_mut()
                        .write_all(format!("{reply}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = serve().await?;
    let sup = Supervisor::builder()
        .pool_with_backend(
            "lines",
            "line-protocol",
            LineManager { addr },
            PoolConfig::default()
                .max_size(2)
                .checkout_timeout(Duration::from_secs(1)),
        )
        .start()
        .await?;
    let pool = sup.pool::<LineManager>("lines")?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.checkout().await?;
            let reply = conn.call(&format!("ECHO hello from task {i}")).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(reply)
        }));
    }
    for t in tasks {
        println!("{}", t.await?.map_err(|e| e.to_string())?);
    }
    let snap = sup.metrics().await?;
    let p = snap.pool("lines").expect("pool");
    println!(
        "8 tasks, {} checkouts over {} connections (max_size 2), backend kind `{}`",
        p.checkouts.ok, p.connects_ok, p.backend
    );
    sup.shutdown().await?;
    Ok(())
}
