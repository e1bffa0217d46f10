//! The `poolvisor` binary, driven as a user would, against the real servers.

mod common;

use std::process::{Command, Output};

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

#[tokio::test]
async fn check_reports_each_pool_and_fails_when_one_is_down() {
    let pg = common::pg_url();
    let with_password = pg.replacen("://root@", "://root:SECRETPW@", 1);
    let port = common::free_port().await;
    let cfg = write_config(&format!(
        "[pools.db]\nkind = \"postgres\"\nurl = \"{with_password}\"\n\n[pools.api]\nkind = \"http\"\nurl = \"http://u:SECRETPW@127.0.0.1:{port}\"\nconnect_timeout = \"1s\"\n"
    ));
    let out = poolvisor(&["check", "--config", cfg.as_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let db = stdout
        .lines()
        .find(|l| l.starts_with("db "))
        .expect("a line for db");
    assert!(
        db.contains("postgres") && db.contains("127.0.0.1:5432/test") && db.ends_with("up"),
        "{db}"
    );
    let api = stdout
        .lines()
        .find(|l| l.starts_with("api "))
        .expect("a line for api");
    assert!(
        api.contains(&format!("http://127.0.0.1:{port}")) && api.contains("down"),
        "{api}"
    );
    assert!(stderr.contains("1 of 2 pools are not up"), "{stderr}");
    assert!(
        !stdout.contains("SECRETPW") && !stderr.contains("SECRETPW"),
        "{stdout}{stderr}"
    );
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("check"));
    let out = poolvisor(&["check", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--config") && text.contains("Exits 1 if a pool is down"),
        "{text}"
    );
    let out = poolvisor(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
}
