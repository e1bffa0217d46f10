#!/usr/bin/env bash
# Makes PostgreSQL and Redis available on loopback for the tests (and promtool), on a fresh Debian
# machine or one where they already run. Idempotent, and quick when all is up.
#   POOLVISOR_PG_URL    default postgres://root@127.0.0.1:5432/test
#   POOLVISOR_REDIS_URL default redis://127.0.0.1:6379
set -euo pipefail

log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  shift
  if [ "$apt_updated" = 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# PostgreSQL
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  need_pkg pg_ctlcluster postgresql postgresql-client
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
fi
# Role `root` and database `test`, with trust auth on loopback (test machines only).
if ! psql "postgres://root@127.0.0.1:5432/test" -Atc 'select 1' >/dev/null 2>&1; then
  log "creating role root and database test"
  as_root su postgres -c "psql -qc \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='root') THEN CREATE ROLE root LOGIN SUPERUSER; END IF; END \\\$\\\$;\""
  as_root su postgres -c "psql -Atc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb -O root test"
  hba=$(as_root su postgres -c "psql -Atc 'show hba_file'")
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
  fi
  wait_for 10 psql "postgres://root@127.0.0.1:5432/test" -Atc 'select 1' \
    || { log "cannot log in as root to database test"; exit 1; }
fi

# TLS with a certificate for `localhost`, and a role that may only log in over TLS with
# SCRAM: for the channel-binding test (tests/postgres.rs). Test machines only.
pg() { psql "postgres://root@127.0.0.1:5432/test" -Atqc "$1"; }
cert=$(pg 'show ssl_cert_file')
if [ "$(pg 'show ssl')" != on ] \
  || ! as_root openssl x509 -in "$cert" -noout -checkhost localhost 2>/dev/null | grep -q 'does match'; then
  need_pkg openssl openssl
  dir=$(dirname "$(pg 'show hba_file')")
  log "giving PostgreSQL a TLS certificate for localhost ($dir/poolvisor-localhost.crt)"
  as_root openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$dir/poolvisor-localhost.key" \
    -out "$dir/poolvisor-localhost.crt" 2>/dev/null
  as_root chown postgres: "$dir/poolvisor-localhost.key" "$dir/poolvisor-localhost.crt"
  as_root chmod 600 "$dir/poolvisor-localhost.key"
  pg "alter system set ssl_cert_file = '$dir/poolvisor-localhost.crt'"
  pg "alter system set ssl_key_file = '$dir/poolvisor-localhost.key'"
  pg "alter system set ssl = on"
  pg 'select pg_reload_conf()' >/dev/null
fi
scram_url="postgres://pv_scram:pv-scram-test@localhost:5432/test?sslmode=require"
if ! psql "$scram_url" -Atc 'select 1' >/dev/null 2>&1; then
  log "creating role pv_scram (SCRAM over TLS only)"
  pg "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='pv_scram') THEN CREATE ROLE pv_scram LOGIN; END IF; END \$\$"
  pg "set password_encryption = 'scram-sha-256'; alter role pv_scram password 'pv-scram-test'"
  hba=$(pg 'show hba_file')
  if ! as_root grep -q '^hostssl all pv_scram' "$hba"; then
    as_root sed -i '1i hostssl all pv_scram 127.0.0.1/32 scram-sha-256\nhostssl all pv_scram ::1/128 scram-sha-256\nhost all pv_scram all reject' "$hba"
  fi
  pg 'select pg_reload_conf()' >/dev/null
  wait_for 10 psql "$scram_url" -Atc 'select 1' \
    || { log "role pv_scram cannot log in over TLS"; exit 1; }
fi

# Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  need_pkg redis-server redis-server
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 15 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG' \
    || { log "Redis did not start"; exit 1; }
fi

# promtool, for the test that checks /metrics. Debian ships it in `prometheus`; the
# server that package would start is not wanted here.
if ! command -v promtool >/dev/null 2>&1; then
  need_pkg promtool --no-install-recommends prometheus
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

log "PostgreSQL and Redis are up; promtool is $(command -v promtool)"
