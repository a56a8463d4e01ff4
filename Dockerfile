# The meshtables init image: FROM scratch, the binary and the shared libraries it links.
# Prepare the root filesystem first, then build:
#   .ci/image-rootfs && docker build -t meshtables .
# (.ci/image-rootfs runs `cargo build --release` and copies what `ldd` lists; no base image
# is needed, nothing is pulled.)
FROM scratch
COPY target/image-rootfs/ /
# The image has no iptables binaries: use native nftables unless told otherwise
# (NATIVE_NFTABLES=false or --native-nftables=false switch back).
ENV NATIVE_NFTABLES=true
# Istio's injected args start with "istio-iptables", a subcommand alias.
ENTRYPOINT ["/meshtables"]
