#!/bin/bash
# Stand-in for `ferry server --data-dir DIR --amqp-listen 127.0.0.1:0` backed by RabbitMQ, to
# validate the ferry-only tests (restart / kill -9 / crash) against a real broker:
#
#   FERRY_TEST_BIN=$PWD/crates/ferry/tests/support/rabbitmq-as-ferry.sh \
#     cargo test -p ferry --test durability --test crash -- --test-threads=3
#
# Same data dir => same node name and Mnesia dir, so restarts recover state. The AMQP port is
# new on every start (like port 0). SIGTERM is forwarded to beam.smp; the harness's kill9
# SIGKILLs this script's process group, which includes beam.smp.
DIR=""
while [ $# -gt 0 ]; do case "$1" in --data-dir) DIR="$2"; shift;; esac; shift; done
[ -n "$DIR" ] || { echo "no --data-dir" >&2; exit 2; }
NAME=r$(echo -n "$DIR" | md5sum | cut -c1-10)
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port); DPORT=$(free_port)
export HOME=$DIR RABBITMQ_NODENAME=$NAME@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$DPORT ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log \
  RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
echo '[].' > "$DIR/enabled_plugins"
/usr/lib/rabbitmq/bin/rabbitmq-server >&2 &
RPID=$!
stop() { for p in $(pgrep -P $RPID); do kill -TERM "$p"; done; }
trap stop TERM
for _ in $(seq 1 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 $RPID 2>/dev/null || { echo "rabbitmq died" >&2; exit 1; }
  sleep 0.1
done
echo "FERRY_READY amqp=127.0.0.1:$PORT"
RC=0
while kill -0 $RPID 2>/dev/null; do wait $RPID; RC=$?; done
echo "rabbitmq-server exited rc=$RC" >&2
exit $RC
