# isol8 base image `isol8-base:bookworm`, built by `isol8 setup` on top of its source:
# debian:bookworm-slim pulled from a registry, or (`isol8 setup --offline`) a debootstrapped
# bookworm rootfs imported through the Engine API and slimmed like the registry image.
# Upgrading here gives both paths the current security updates. Every runtime image is
# built FROM the result with images/runtime.Dockerfile.
FROM {{SOURCE}}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
LABEL isol8.managed="true" isol8.base-source="{{SOURCE_LABEL}}"
