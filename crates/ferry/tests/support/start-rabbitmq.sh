#!/bin/bash
# Start a reference RabbitMQ (Debian's rabbitmq-server) on loopback, in the background, for
# running the broker-agnostic black-box tests against it:
#
#   crates/ferry/tests/support/start-rabbitmq.sh 5699 /tmp/rmq     # prints the URL when ready
#   FERRY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5699/%2f cargo test -p ferry --tests
#
# Needs `apt-get install -y rabbitmq-server` (3.10.x on Debian 12). Stop it with
#   kill -TERM "$(cat /tmp/rmq/beam.pid)"
set -euo pipefail
PORT=${1:-5699}
DIR=${2:-/tmp/rmq-$PORT}
mkdir -p "$DIR"
export HOME=$DIR RABBITMQ_NODENAME=rabbit$PORT@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$((PORT + 20000)) ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log \
  RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
echo '[].' > "$DIR/enabled_plugins"
setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$DIR/server.out" 2>&1 &
WRAPPER=$!
for _ in $(seq 1 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    pgrep -P "$WRAPPER" -x beam.smp > "$DIR/beam.pid" || true
    echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"
    exit 0
  fi
  kill -0 "$WRAPPER" 2>/dev/null || { cat "$DIR/server.out" >&2; exit 1; }
  sleep 0.1
done
echo "RabbitMQ did not open port $PORT in 60 s; see $DIR/server.out" >&2
exit 1
