//! The `poolvisor` binary, driven as a user would, against the real servers.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use poolvisor::Supervisor;

fn poolvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolvisor"))
        .args(args)
        .env_remove("POOLVISOR_POOLS__DB__MAX_SIZE")
        .output()
        .expect("run poolvisor")
}

fn write_config(text: &str) -> tempfile_path::Path {
    tempfile_path::Path::new(text)
}

/// A config file under the target directory, removed on drop.
mod tempfile_path {
    pub struct Path(std::path::PathBuf);
    impl Path {
        pub fn new(text: &str) -> Path {
            let name = format!(
                "pv_cli_{}_{}.toml",
                std::process::id(),
                super::common::unique_name("cfg")
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            Path(path)
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// `check` over five pools: PostgreSQL up; an HTTP upstream that answers (a real hyper
/// server) up, its `health_path` answering 200; the same upstream down when its
/// `health_path` answers 404; an HTTP port nobody listens on down; an HTTP port that
/// accepts connections and never answers down too (HTTP/1.1 says nothing on connect, so
/// `check` asks `HEAD /`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_pool_and_fails_when_one_is_down() {
    let pg = common::pg_url();
    let with_password = pg.replacen("://root@", "://root:SECRETPW@", 1);
    let port = common::free_port().await;
    // Accepts into its backlog and never answers.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let sup = Supervisor::builder().start().await.unwrap();
    let web = poolvisor::admin::AdminServer::start(
        sup.clone(),
        &poolvisor::config::AdminSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
    )
    .await
    .unwrap();
    let cfg = write_config(&format!(
        "[pools.db]\nkind = \"postgres\"\nurl = \"{with_password}\"\n\n\
         [pools.api]\nkind = \"http\"\nurl = \"http://u:SECRETPW@127.0.0.1:{port}\"\nconnect_timeout = \"1s\"\n\n\
         [pools.mute]\nkind = \"http\"\nurl = \"http://u:SECRETPW@127.0.0.1:{mute_port}\"\nconnect_timeout = \"1s\"\n\n\
         [pools.web]\nkind = \"http\"\nurl = \"http://{addr}\"\nhealth_path = \"/health\"\n\n\
         [pools.lost]\nkind = \"http\"\nurl = \"http://{addr}\"\nhealth_path = \"/no-such-route\"\n",
        addr = web.addr()
    ));
    let path = cfg.as_str().to_string();
    let out = tokio::task::spawn_blocking(move || poolvisor(&["check", "--config", &path]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = |pool: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{pool} ")))
            .unwrap_or_else(|| panic!("a line for {pool}: {stdout}"))
            .to_string()
    };
    let db = line("db");
    assert!(
        db.contains("postgres") && db.contains("127.0.0.1:5432/test") && db.ends_with("up"),
        "{db}"
    );
    let api = line("api");
    assert!(
        api.contains(&format!("http://127.0.0.1:{port}")) && api.contains("down"),
        "{api}"
    );
    let mute_line = line("mute");
    assert!(mute_line.contains("down: no HTTP answer"), "{mute_line}");
    assert!(line("web").ends_with("up"), "{}", line("web"));
    let lost = line("lost");
    assert!(
        lost.contains("down: ") && lost.contains("GET /no-such-route: answered 404"),
        "{lost}"
    );
    assert!(stderr.contains("3 of 5 pools are not up"), "{stderr}");
    assert!(
        !stdout.contains("SECRETPW") && !stderr.contains("SECRETPW"),
        "{stdout}{stderr}"
    );
    drop((mute, web));
    sup.shutdown().await.unwrap();
}

#[test]
fn check_succeeds_when_every_pool_is_up() {
    let cfg = write_config(&format!(
        "[pools.db]\nkind = \"postgres\"\nurl = \"{}\"\n",
        common::pg_url()
    ));
    let out = poolvisor(&["check", "--config", cfg.as_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_invalid_or_missing_file_is_a_clear_error() {
    let cfg = write_config(
        "[pools.db]\nkind = \"postgres\"\nurl = \"postgres://u:SECRETPW@h/x\"\nmax_size = 0\n",
    );
    let out = poolvisor(&["check", "--config", cfg.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("pools.db.max_size: must be at least 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRETPW"));
    let out = poolvisor(&["check", "--config", "/nonexistent/poolvisor.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

#[test]
fn help_describes_every_command() {
    let out = poolvisor(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "check",
        "serve",
        "bench",
        "POOLVISOR_POOLS__DB__MAX_SIZE",
        "Exit codes",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    for (command, needles) in [
        ("check", &["--config", "Exits 1 if a pool is down"][..]),
        (
            "serve",
            &[
                "--config",
                "--listen",
                "--shutdown-deadline",
                "SIGTERM",
                "/events",
            ][..],
        ),
        (
            "bench",
            &[
                "--config",
                "--pool",
                "--tasks",
                "--duration",
                "--op",
                "get:/path",
                "Little's law",
                "--no-unpooled",
            ][..],
        ),
    ] {
        let out = poolvisor(&[command, "--help"]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(
                text.contains(needle),
                "{command} --help lacks {needle:?}:\n{text}"
            );
        }
    }
    let out = poolvisor(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
}

/// `serve` on a free port, its stderr read line by line.
struct Served {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    log: String,
    addr: std::net::SocketAddr,
}

impl Served {
    async fn start(config: &str) -> Served {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolvisor"))
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = stderr.next_line().await {
                log.push_str(&line);
                log.push('\n');
                if let Some(addr) = line.split("admin endpoint on http://").nth(1) {
                    return addr.trim().parse().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("serve did not come up:\n{log}"));
        Served {
            child,
            stderr,
            log,
            addr,
        }
    }

    /// Sends `signal`, then waits (at most 20 s) for the exit; the rest of stderr
    /// joins the log.
    async fn stop(mut self, signal: &str) -> (Option<i32>, String) {
        let pid = self.child.id().unwrap().to_string();
        let sent = tokio::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("serve exits within 20 s of the signal")
            .unwrap();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        (status.code(), self.log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_admin_endpoint_until_sigterm_then_closes_every_connection() {
    let app = common::unique_name("cli_serve");
    let url = common::pg_url_named(&app).replacen("://root@", "://root:SECRETPW@", 1);
    let cfg = write_config(&format!(
        "[admin]\ntoken = \"t0ken\"\n\n[pools.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmin_idle = 2\n"
    ));
    let served = Served::start(cfg.as_str()).await;
    let admin = common::pg_admin().await;
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            common::pg_count(&admin, &app).await == 2
        })
        .await,
        "min_idle connections open on the server"
    );
    assert_eq!(common::get(served.addr, "/health", None).await.0, 200);
    assert_eq!(common::get(served.addr, "/metrics", None).await.0, 401);
    let (status, metrics) = common::get(served.addr, "/metrics", Some("t0ken")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("poolvisor_pool_up{pool=\"db\"} 1"),
        "{metrics}"
    );
    let (status, pools) = common::get(served.addr, "/pools", Some("t0ken")).await;
    assert_eq!(status, 200);
    assert!(!format!("{metrics}{pools}").contains("SECRETPW"));

    let (code, log) = served.stop("TERM").await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("shut down in"),
        "{log}"
    );
    assert!(!log.contains("SECRETPW"), "{log}");
    assert_eq!(
        common::pg_count(&admin, &app).await,
        0,
        "every connection closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shuts_down_on_sigint_too_and_refuses_a_taken_port() {
    let cfg = write_config(&format!(
        "[pools.cache]\nkind = \"redis\"\nurl = \"{}\"\n",
        common::redis_url()
    ));
    let served = Served::start(cfg.as_str()).await;
    let taken = served.addr.to_string();
    let out = poolvisor(&["serve", "--config", cfg.as_str(), "--listen", &taken]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("admin endpoint on {taken}")),
        "{stderr}"
    );
    let (code, log) = served.stop("INT").await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGINT"), "{log}");
}

/// Runs `poolvisor bench` and returns (exit code, stdout, stderr).
fn bench(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["bench", "--config", config, "--duration", "700ms"];
    if !args.contains(&"--tasks") {
        all.extend(["--tasks", "4"]);
    }
    all.extend_from_slice(args);
    let out = poolvisor(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ops/s column of the row that starts with `name`.
fn ops_per_second(stdout: &str, name: &str) -> f64 {
    stdout
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} row in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_each_backend_compares_with_no_pool_and_recommends_a_size() {
    // An HTTP upstream for `get:`: a poolvisor admin endpoint is a real hyper server.
    let sup = Supervisor::builder().start().await.unwrap();
    let upstream = poolvisor::admin::AdminServer::start(
        sup.clone(),
        &poolvisor::config::AdminSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
    )
    .await
    .unwrap();
    let pg = common::pg_url().replacen("://root@", "://root:SECRETPW@", 1);
    let cfg = write_config(&format!(
        "[supervisor]\nmax_connections = 12\n\n[pools.db]\nkind = \"postgres\"\nurl = \"{pg}\"\nmax_size = 4\n\n\
         [pools.cache]\nkind = \"redis\"\nurl = \"{}\"\nmax_size = 4\n\n\
         [pools.api]\nkind = \"http\"\nurl = \"http://u:SECRETPW@{}\"\nmax_size = 4\n",
        common::redis_url(),
        upstream.addr()
    ));
    let cfg = cfg.as_str().to_string();
    let run = |args: Vec<&'static str>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || bench(&cfg, &args))
    };

    let (code, stdout, stderr) = run(vec!["--pool", "db", "--op", "select1"]).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let pooled = ops_per_second(&stdout, "pooled");
    let unpooled = ops_per_second(&stdout, "unpooled");
    assert!(pooled > 0.0 && unpooled > 0.0, "{stdout}");
    assert!(
        stdout.contains("pool db (postgres), op select1, 4 tasks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pooling: ") && stdout.contains("× the throughput"),
        "{stdout}"
    );
    let recommended: usize = stdout
        .split("recommended max_size: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recommendation in:\n{stdout}"));
    assert!(
        (1..=12).contains(&recommended),
        "bounded by the budget: {stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains("SECRETPW"));

    let (code, stdout, stderr) = run(vec!["--pool", "cache", "--op", "ping", "--no-unpooled"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(ops_per_second(&stdout, "pooled") > 0.0);
    assert!(!stdout.contains("unpooled"), "{stdout}");

    let (code, stdout, stderr) = run(vec![
        "--pool",
        "cache",
        "--op",
        "ping",
        "--shared",
        "--no-unpooled",
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(ops_per_second(&stdout, "shared") > 0.0, "{stdout}");

    let (code, stdout, stderr) = run(vec!["--pool", "api", "--op", "get:/health"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(ops_per_second(&stdout, "pooled") > 0.0, "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains("SECRETPW"));

    // A path the upstream does not serve: every operation fails, with the reason.
    let (code, stdout, _) = run(vec!["--pool", "api", "--op", "get:/nope", "--no-unpooled"])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("first error: GET /nope: 404 Not Found"),
        "{stdout}"
    );

    for (args, message) in [
        (
            vec!["--pool", "db", "--op", "ping"],
            "op `ping` needs a redis pool, but `db` is postgres",
        ),
        (
            vec!["--pool", "nope", "--op", "ping"],
            "no pool named `nope`",
        ),
        (
            vec!["--pool", "db", "--op", "get:nope"],
            "expected ping, select1 or get:/path",
        ),
        (
            vec!["--pool", "db", "--op", "select1", "--tasks", "0"],
            "--tasks must be greater than zero",
        ),
    ] {
        let (code, _, stderr) = run(args).await.unwrap();
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }
    sup.shutdown().await.unwrap();
}
