# Runtime image recipe shared by every isol8 runtime. `isol8 setup` fills the
# placeholders in double braces and builds it through the Docker Engine API; the base image is either
# a pulled debian:bookworm-slim or a debootstrapped bookworm rootfs (--offline), so both
# paths run exactly this recipe.
FROM {{BASE}}

# System packages of the runtime (none for runtimes shipped as a single binary).
{{APT}}

# The unprivileged user that runs sandboxed code, and its working directory.
RUN groupadd --gid 1000 sandbox \
 && useradd --uid 1000 --gid 1000 --home-dir /sandbox --no-create-home --shell /bin/bash sandbox \
 && mkdir -p /sandbox && chown 1000:1000 /sandbox && chmod 1777 /tmp

# Runtime binaries fetched and verified on the host (Node, Bun, Deno).
{{COPY_BINARIES}}

# The in-sandbox agent: PID 1 of every container.
COPY isol8-agent /usr/local/bin/isol8-agent
ENV LANG=C.UTF-8 {{ENV}}
WORKDIR /sandbox
LABEL isol8.managed="true" isol8.runtime="{{RUNTIME}}" isol8.content-hash="{{HASH}}"
ENTRYPOINT ["/usr/local/bin/isol8-agent"]
