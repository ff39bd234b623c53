#!/usr/bin/env bash
# Build the container images switchboard/gateway:<tag> and switchboard/operator:<tag> from the
# Containerfile (`make image` runs this). Two ways, the same runtime stages:
#
#   IMAGE_FROM=host (default)  the binaries cargo builds on this machine (IMAGE_PROFILE=release
#       by default, or debug), stripped, on a base assembled here from this machine's files:
#       the shared libraries `ldd` names, the dynamic loader, CA certificates, /etc/passwd and
#       /etc/group with nonroot = 65532. No registry, no Rust image: `--build-arg
#       BINARIES=prebuilt --build-arg RUNTIME_IMAGE=localhost/switchboard-base:<tag>`.
#   IMAGE_FROM=source  the Containerfile as a user anywhere runs it: Rust builder image and
#       distroless `cc`, both pulled from their registries.
#
# Environment: CONTAINER_TOOL (podman or docker; default podman when installed), IMAGE_TAG
# (default the workspace version, which is the chart's appVersion), IMAGE_PROFILE (host only).
# Prints each image's name and size.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "image: $*" >&2; }
die() {
    say "$*"
    exit 1
}

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$VERSION" ] || die "no version in Cargo.toml [workspace.package]"
TAG="${IMAGE_TAG:-$VERSION}"
FROM="${IMAGE_FROM:-host}"
PROFILE="${IMAGE_PROFILE:-release}"
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
TOOL="${CONTAINER_TOOL:-}"
if [ -z "$TOOL" ]; then
    if command -v podman >/dev/null 2>&1; then TOOL=podman; else TOOL=docker; fi
fi
command -v "$TOOL" >/dev/null 2>&1 ||
    die "$TOOL not found: install podman (scripts/setup.sh does, on Debian) or docker"
# The names Kubernetes resolves the chart's `switchboard/gateway` to; docker adds docker.io/
# itself, podman would otherwise store them as localhost/switchboard/...
PREFIX=switchboard
[ "$TOOL" = podman ] && PREFIX=docker.io/switchboard

common_args=(
    --build-arg "VERSION=$VERSION"
    --build-arg "SWITCHBOARD_GIT_COMMIT=$COMMIT"
)

case "$FROM" in
source)
    for target in gateway operator; do
        say "building $PREFIX/$target:$TAG (Containerfile, Rust builder, distroless base)"
        "$TOOL" build -f Containerfile --target "$target" "${common_args[@]}" \
            -t "$PREFIX/$target:$TAG" .
    done
    ;;
host)
    case "$PROFILE" in
    release) cargo_profile=(--release) dir=release ;;
    debug) cargo_profile=() dir=debug ;;
    *) die "IMAGE_PROFILE must be release or debug, not '$PROFILE'" ;;
    esac
    target_dir="${CARGO_TARGET_DIR:-target}"
    cargo build --quiet "${cargo_profile[@]}" \
        -p switchboard-gateway --bin switchboard-gateway \
        -p switchboard-operator --bin switchboard-operator

    work="$target_dir/image"
    rm -rf "$work"
    mkdir -p "$work/context/bin" "$work/base/rootfs"
    bins=()
    for bin in switchboard-gateway switchboard-operator; do
        if command -v strip >/dev/null 2>&1; then
            strip -o "$work/context/bin/$bin" "$target_dir/$dir/$bin"
        else
            cp "$target_dir/$dir/$bin" "$work/context/bin/$bin"
        fi
        bins+=("$work/context/bin/$bin")
    done

    # The base: what distroless `cc` holds that these binaries use. No tzdata: both binaries
    # log and compute in UTC only.
    rootfs="$work/base/rootfs"
    mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp" "$rootfs/usr/local/bin"
    chmod 1777 "$rootfs/tmp"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
    printf '%s\n' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
    ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] || die "$ca not found (Debian package ca-certificates)"
    cp "$ca" "$rootfs$ca"
    # Every shared object the binaries load (ldd prints `name => /path (addr)` and the loader
    # as `/path (addr)`; not the `/path/to/binary:` headers), copied to the same path with
    # symlinks resolved.
    mapfile -t libs < <(ldd "${bins[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u)
    [ "${#libs[@]}" -gt 0 ] || die "ldd named no shared libraries (a static build needs no base)"
    for lib in "${libs[@]}"; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
    printf '%s\n' 'FROM scratch' 'COPY rootfs/ /' >"$work/base/Containerfile"
    base="localhost/switchboard-base:$TAG"
    pull=()
    [ "$TOOL" = podman ] && pull=(--pull=never)
    binaries="localhost/switchboard-binaries:$TAG"
    ours=("$base" "$binaries" "$PREFIX/gateway:$TAG" "$PREFIX/operator:$TAG")
    # What these names pointed at before: removed at the end when replaced, so that repeated
    # builds do not pile up untagged images (nothing else is touched).
    before=()
    for ref in "${ours[@]}"; do
        before+=("$("$TOOL" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)")
    done

    say "assembling $base from this machine: ${libs[*]}, $ca, passwd/group (nonroot 65532)"
    "$TOOL" build --quiet "${pull[@]}" -f "$work/base/Containerfile" -t "$base" "$work/base" >/dev/null
    # The `prebuilt` stage, tagged so it is not left behind untagged; the two builds below
    # reuse it from the layer cache.
    "$TOOL" build --quiet "${pull[@]}" -f Containerfile --target prebuilt \
        -t "$binaries" "$work/context" >/dev/null
    for target in gateway operator; do
        say "building $PREFIX/$target:$TAG ($PROFILE binaries built here, base $base)"
        "$TOOL" build --quiet "${pull[@]}" -f Containerfile --target "$target" "${common_args[@]}" \
            --build-arg BINARIES=prebuilt --build-arg "RUNTIME_IMAGE=$base" \
            -t "$PREFIX/$target:$TAG" "$work/context" >/dev/null
    done
    for i in "${!ours[@]}"; do
        now="$("$TOOL" image inspect --format '{{.Id}}' "${ours[$i]}")"
        if [ -n "${before[$i]}" ] && [ "${before[$i]}" != "$now" ]; then
            "$TOOL" rmi "${before[$i]}" >/dev/null 2>&1 || true
        fi
    done
    ;;
*) die "IMAGE_FROM must be host or source, not '$FROM'" ;;
esac

for target in gateway operator; do
    size="$("$TOOL" image inspect --format '{{.Size}}' "$PREFIX/$target:$TAG")"
    printf '%s/%s:%s\t%s bytes (%s MB)\n' "$PREFIX" "$target" "$TAG" "$size" "$((size / 1000000))"
done
