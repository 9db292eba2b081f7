#!/usr/bin/env bash
# Check, and start where needed, the servers the transport suites run against, on loopback:
# Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672, NATS JetStream 127.0.0.1:4222.
#   scripts/dev-services.sh [check|start] [redis|amqp|nats|all]...
# `check` exits non-zero if any named service is down; `start` starts those that are down and
# waits until they accept connections. The commands match how Debian's packages run them.
set -uo pipefail

action=${1:-start}
shift || true
services=("$@")
[ ${#services[@]} -eq 0 ] && services=(all)
[ "${services[*]}" = all ] && services=(redis amqp nats)

port_of() { case $1 in redis) echo 6379 ;; amqp) echo 5672 ;; nats) echo 4222 ;; *) return 1 ;; esac; }

is_up() {
  local port
  port=$(port_of "$1") || { echo "unknown service: $1" >&2; return 2; }
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

start_one() {
  case $1 in
    redis)
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
      ;;
    amqp)
      rabbitmq-server -detached
      rabbitmqctl await_startup >/dev/null 2>&1 || true
      ;;
    nats)
      mkdir -p /var/lib/nats-server
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
      ;;
  esac
}

wait_up() {
  local deadline=$((SECONDS + ${2:-90}))
  until is_up "$1"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.5
  done
}

status=0
for s in "${services[@]}"; do
  if is_up "$s"; then
    echo "$s: up (127.0.0.1:$(port_of "$s"))"
    continue
  fi
  if [ "$action" = check ]; then
    echo "$s: DOWN (127.0.0.1:$(port_of "$s"))"
    status=1
    continue
  fi
  echo "$s: down, starting…"
  if ! command -v "$(case $s in redis) echo redis-server ;; amqp) echo rabbitmq-server ;; nats) echo /usr/sbin/nats-server ;; esac)" >/dev/null 2>&1; then
    echo "$s: server not installed on this machine" >&2
    status=1
    continue
  fi
  start_one "$s"
  if wait_up "$s" 120; then echo "$s: up"; else echo "$s: did not come up" >&2; status=1; fi
done
exit $status
