# The meshtables init image: FROM scratch, the static binary and its istio-iptables /
# istio-clean-iptables links, nothing else (no loader, no shared library: glibc is linked in,
# and nftables messages are encoded in Rust). Prepare the root filesystem first, then build:
#   .ci/image-rootfs && docker build -t meshtables .
# (.ci/image-rootfs runs the static `cargo build --release`; no base image is needed, nothing
# is pulled.)
FROM scratch
COPY target/image-rootfs/ /
# The image has no iptables binaries: use native nftables unless told otherwise
# (NATIVE_NFTABLES=false or --native-nftables=false switch back).
ENV NATIVE_NFTABLES=true
# Istio's injected args start with "istio-iptables", a subcommand alias.
ENTRYPOINT ["/meshtables"]
