# isol8 runtime image: one template for every runtime.
#
# `isol8 setup` fills the double-brace placeholders per runtime (crates/isol8/src/images/recipe.rs)
# and builds the result through the Docker Engine API with the classic builder, from an
# in-memory context holding this file, `isol8-agent`, `bin/<runtime binary>` and
# `files/<path>` for isol8's own files. The
# content hash of the image (this text, the pinned binaries, the agent bytes, the base
# image id) is added as the label `isol8.content-hash`.
#
# The base is `isol8-base:bookworm`: a pulled debian:bookworm-slim, or a debootstrapped
# bookworm rootfs (`isol8 setup --offline`). Everything below is the same for both.
#
# Steps run from least to most often changed so Docker's layer cache makes an agent-only
# change a rebuild of seconds: Debian packages, the sandbox user, runtime binaries,
# environment, and the agent last.
FROM {{BASE}}

# Debian packages of the runtime, without recommends, package lists removed.
{{APT}}

# The unprivileged user that runs sandboxed code: uid/gid 1000, home /sandbox, no password
# (locked), no sudo. No set-user-id or set-group-id programs are left (su, passwd, …), so
# nothing in the image can raise privileges even without no-new-privileges.
RUN groupadd --gid 1000 sandbox \
 && useradd --uid 1000 --gid 1000 --home-dir /sandbox --no-create-home --no-log-init \
        --shell /bin/bash sandbox \
 && install -d -o 1000 -g 1000 -m 0755 /sandbox \
 && chmod 1777 /tmp \
 && find / -xdev -type f -perm /6000 -exec chmod ug-s {} +

# The C.UTF-8 locale that LANG names (below), added to a locale archive: a process that
# sets its locale (bash does at every start) then maps that one file, instead of the C
# library opening the locale's twelve category files one by one. Same locale data.
RUN localedef --add-to-archive /usr/lib/locale/C.utf8

# Runtime binaries fetched on the host from their registries and verified against pinned
# digests.
{{BINARIES}}

# Proof that the runtime starts on this base.
{{CHECK}}

ENV LANG=C.UTF-8{{ENV}}
WORKDIR /sandbox

# Files of isol8's own the runtime reads (a pre-start loader), each named by its SHA-256.
{{FILES}}

# The in-sandbox agent, PID 1 of every isol8 container.
COPY isol8-agent /usr/local/bin/isol8-agent
LABEL isol8.managed="true" isol8.runtime="{{RUNTIME}}"
ENTRYPOINT ["/usr/local/bin/isol8-agent"]
