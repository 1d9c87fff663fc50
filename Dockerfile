# Ferry's runtime image: the ferry binary (built on the host: `cargo build --release`) on a
# slim Debian 12, run as a non-root user, data in the /var/lib/ferry volume.
#
#   cargo build --release && docker build -t ferry .
#   docker build --build-arg FERRY_BINARY=target/debug/ferry -t ferry .   # another build
#
# Machines without an image registry build debian:bookworm-slim first: scripts/docker-base.
FROM debian:bookworm-slim

ARG FERRY_BINARY=target/release/ferry
COPY ${FERRY_BINARY} /usr/local/bin/ferry

# A fixed numeric user (no useradd needed in the slim base) that owns the data volume.
RUN mkdir -p /var/lib/ferry && chown 10001:10001 /var/lib/ferry && chmod 0750 /var/lib/ferry
USER 10001:10001
VOLUME /var/lib/ferry

ENV FERRY_DATA_DIR=/var/lib/ferry \
    FERRY_AMQP_LISTEN=0.0.0.0:5672 \
    FERRY_HTTP_LISTEN=0.0.0.0:15672 \
    FERRY_METRICS_LISTEN=0.0.0.0:15692
# AMQP, management API and web UI, Prometheus, cluster links (when clustered).
EXPOSE 5672 15672 15692 25672

# RabbitMQ's alarms check through the management API, as guest from loopback (with another
# default user, give the check its credentials: FERRY_USER / FERRY_PASSWORD in the container).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["ferry", "ctl", "--timeout", "4", "health", "alarms"]

ENTRYPOINT ["ferry"]
CMD ["server"]
