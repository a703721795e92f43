#!/usr/bin/env bash
# Makes sure the three local services pagefleet needs are up on 127.0.0.1:
# Postgres 5432, Redis 6379, RabbitMQ 5672. Starts any that is not.
set -u
ok=0

wait_for() { # name, command, seconds
  local name=$1 check=$2 secs=$3
  for _ in $(seq 1 "$secs"); do
    if eval "$check" >/dev/null 2>&1; then echo "services: $name up"; return 0; fi
    sleep 1
  done
  echo "services: $name did not come up within ${secs}s" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "services: starting Postgres"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
wait_for Postgres "pg_isready -h 127.0.0.1 -p 5432 -q" 30 || ok=1

if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" != "PONG" ]; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for Redis '[ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ]' 30 || ok=1

amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! amqp_up; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
wait_for RabbitMQ amqp_up 90 || ok=1

exit $ok
