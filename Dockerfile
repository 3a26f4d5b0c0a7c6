# syntax=docker/dockerfile:1
# egressd container image: build stage with the same dependency script and build as CI, slim
# runtime stage with only the shared libraries the binary links, running as a non-root user.
# Build: docker build -t egressd .   (CI builds it with buildah: scripts/build-image.sh)

FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DEGRESSD_BUILD_TESTS=OFF \
    && cmake --build /build -j"$(nproc)" \
    && strip /build/egressd \
    && /build/egressd --version \
    && /build/egressd --check-config --config conf/container.yaml > /dev/null

FROM debian:bookworm
# Runtime libraries only: exactly what `ldd egressd` lists beyond libc.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       libspdlog1.10 libfmt9 libyaml-cpp0.7 libc-ares2 libprometheus-cpp-core1.0 libssl3 \
       ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 egressd \
    && useradd --no-create-home --uid 10001 --gid egressd --home-dir /nonexistent \
       --shell /usr/sbin/nologin egressd
COPY --from=build /build/egressd /usr/local/bin/egressd
COPY conf/container.yaml /etc/egressd/egressd.yaml
USER 10001:10001
EXPOSE 3128 9090
ENV EGRESSD_CONFIG=/etc/egressd/egressd.yaml
# No curl in the image: egressd probes its own readiness endpoint, where the config and the
# environment put it (admin.health_address when set, else the admin listener on loopback).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/egressd", "probe"]
# Exec form: egressd is PID 1 and receives SIGTERM itself (it drains, then exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/egressd"]
