#!/usr/bin/env bash
# The ARM lane: edgesam's runtime on linux/aarch64 under qemu user-mode emulation, on an x86 Debian host.
#
#   scripts/arm-lane.sh [BUNDLE]
#
# Builds (once, then cached) an aarch64 sysroot: qemu-user-static and Debian arm64 python3.11 from apt,
# the aarch64 wheels of edgesam's base install (MNN, numpy, ...) from PyPI, edgesam as a pure-Python
# wheel. Without BUNDLE it converts the test-only tiny model and, for the fp16 decoder check, the
# trained demo model (needs torch on the host). Then, under
# qemu-aarch64-static, with scripts/arm_checks.py:
#   1. `edgesam segment` on a sample image, MNN fp32, against the same command on x86;
#   2. decoder and encoder at MNN precision "low" (fp16 arithmetic) against x86 fp32;
#   3. edgesam.runtime imports with no torch present;
#   4. the int8 encoder in int8 arithmetic (MNN memory mode low) against x86 fp32.
# Exit 0 only if every check holds its tolerances. No network, no qemu: it fails, it never skips.
#
# Environment: EDGESAM_ARM_CACHE (default ~/.cache/edgesam-arm), EDGESAM_HOST_PYTHON (default
# .venv/bin/python), EDGESAM_ARM_IMAGE (default assets/landscape.png), EDGESAM_ARM_WORK (default: a
# temporary folder, removed at the end).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EDGESAM_ARM_CACHE:-$HOME/.cache/edgesam-arm}
HOST_PY=${EDGESAM_HOST_PYTHON:-$REPO/.venv/bin/python}
IMAGE=${EDGESAM_ARM_IMAGE:-$REPO/assets/landscape.png}
BUNDLE=${1:-}
T0=$SECONDS

die() { echo "arm-lane: FAILED: $*" >&2; exit 1; }
step() { echo "arm-lane: [$((SECONDS - T0)) s] $*" >&2; }

[ $# -le 1 ] || die "usage: scripts/arm-lane.sh [BUNDLE]"
[ -x "$HOST_PY" ] || die "no host python at $HOST_PY (run make setup, or set EDGESAM_HOST_PYTHON)"
[ -f "$IMAGE" ] || die "no image $IMAGE"
if [ -n "$BUNDLE" ]; then
    [ -f "$BUNDLE/manifest.json" ] || die "$BUNDLE is not a bundle (no manifest.json)"
    BUNDLE=$(cd "$BUNDLE" && pwd)
fi
for tool in apt-get dpkg-deb sha256sum unzip; do
    command -v "$tool" >/dev/null || die "$tool not found (the lane needs a Debian host)"
done
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# apt with its own lists and cache under $CACHE: no root, and the host's apt state is never touched.
apt_for() {  # apt_for ARCH ARGS...
    local arch=$1; shift
    mkdir -p "$CACHE/apt/$arch/lists/partial" "$CACHE/apt/$arch/cache/archives/partial"
    apt-get -q -o APT::Architecture="$arch" -o APT::Architectures="$arch" \
        -o Dir::State::Lists="$CACHE/apt/$arch/lists" -o Dir::Cache="$CACHE/apt/$arch/cache" \
        -o Dir::State::status=/dev/null -o Debug::NoLocking=1 "$@"
}

# Download Debian packages of ARCH into $CACHE/debs/ARCH.
fetch_debs() {  # fetch_debs ARCH PACKAGES...
    local arch=$1; shift
    mkdir -p "$CACHE/debs/$arch"
    apt_for "$arch" update >"$CACHE/apt-$arch-update.log" 2>&1 \
        || { tail -5 "$CACHE/apt-$arch-update.log" >&2; die "apt-get update ($arch) failed: is the Debian mirror reachable?"; }
    (cd "$CACHE/debs/$arch" && apt_for "$arch" download "$@") >"$CACHE/apt-$arch-download.log" 2>&1 \
        || { tail -5 "$CACHE/apt-$arch-download.log" >&2; die "apt-get download ($arch) of $* failed"; }
}

deb_of() {  # deb_of ARCH PACKAGE: the newest downloaded .deb of PACKAGE
    local deb
    deb=$(ls -t "$CACHE/debs/$1/${2}_"*"_$1.deb" "$CACHE/debs/$1/${2}_"*"_all.deb" 2>/dev/null | head -1) || true
    [ -n "$deb" ] || die "package $2 ($1) was not downloaded"
    echo "$deb"
}

# Download Debian packages of ARCH and unpack them into DEST (atomically: DEST appears only when done).
unpack_debs() {  # unpack_debs ARCH DEST PACKAGES...
    local arch=$1 dest=$2; shift 2
    fetch_debs "$arch" "$@"
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    for p in "$@"; do
        dpkg-deb -x "$(deb_of "$arch" "$p")" "$dest.tmp"
    done
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# --- 1. qemu-aarch64-static (amd64 package, unpacked into the cache: no root needed) -------------
QEMU_PKGS="qemu-user-static"
QEMU_DIR="$CACHE/qemu-$(echo "$QEMU_PKGS" | sha256sum | cut -c1-12)"
if [ ! -x "$QEMU_DIR/usr/bin/qemu-aarch64-static" ]; then
    step "fetching qemu-user-static from apt"
    fetch_debs amd64 $QEMU_PKGS
    # The package holds every target (370 MB unpacked): take the one binary the lane runs. tar stops
    # at the first match (--occurrence), so dpkg-deb may die of SIGPIPE; the file is checked below.
    rm -rf "$QEMU_DIR.tmp"; mkdir -p "$QEMU_DIR.tmp"
    dpkg-deb --fsys-tarfile "$(deb_of amd64 qemu-user-static)" 2>/dev/null \
        | tar -x -C "$QEMU_DIR.tmp" --occurrence=1 ./usr/bin/qemu-aarch64-static || true
    [ -x "$QEMU_DIR.tmp/usr/bin/qemu-aarch64-static" ] || die "qemu-aarch64-static not found in qemu-user-static"
    rm -rf "$QEMU_DIR"; mv "$QEMU_DIR.tmp" "$QEMU_DIR"
fi
QEMU="$QEMU_DIR/usr/bin/qemu-aarch64-static"
[ -x "$QEMU" ] || die "qemu-aarch64-static missing from $QEMU_DIR"

# --- 2. aarch64 sysroot: Debian arm64 python3.11 and the C libraries it and MNN load --------------
ARM_PKGS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libc6 libgcc-s1
libstdc++6 libgomp1 zlib1g libssl3 libffi8 libexpat1 libbz2-1.0 liblzma5 libzstd1 libcrypt1 libuuid1
libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2
libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 media-types"
ROOT="$CACHE/sysroot-$(echo $ARM_PKGS | sha256sum | cut -c1-12)"
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    step "building the aarch64 sysroot from Debian arm64 packages"
    unpack_debs arm64 "$ROOT" $ARM_PKGS
fi
arm() { "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"; }
arm -c 'import platform; assert platform.machine() == "aarch64", platform.machine()' \
    || die "the aarch64 python does not run under $QEMU"

# --- 3. edgesam as a pure-Python wheel, built from a copy of the work tree (no build/ in the repo) ----
WORK=${EDGESAM_ARM_WORK:-}
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgesam-arm.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
step "building the edgesam wheel"
rm -rf "$WORK/src" "$WORK/dist" "$WORK/site-edgesam"
mkdir -p "$WORK/src"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/edgesam" "$REPO/convert" "$REPO/runtime" "$WORK/src/"
[ -f "$REPO/LICENSE" ] && cp "$REPO/LICENSE" "$WORK/src/"
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1 \
    || { tail -5 "$WORK/wheel.log" >&2; die "pip wheel of edgesam failed"; }
WHEEL=$(ls "$WORK"/dist/edgesam-*-py3-none-any.whl 2>/dev/null | head -1)
[ -n "$WHEEL" ] || die "the edgesam wheel is not pure Python (no py3-none-any wheel in $WORK/dist)"
unzip -q "$WHEEL" -d "$WORK/site-edgesam"

# --- 4. aarch64 wheels of edgesam's dependencies, at the host's versions (so x86 and ARM run the same MNN)
REQS=$(unzip -p "$WHEEL" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: \([^;]*\)$/\1/p')
PINS=$(for r in $REQS; do
    name=$(echo "$r" | sed 's/[<>=!~ ].*//')
    ver=$("$HOST_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) \
        && echo "$name==$ver" || echo "$r"
done | sort)
KEY=$(echo "$PINS" | sha256sum | cut -c1-12)
DEPS="$CACHE/site-$KEY"
if [ ! -d "$DEPS" ]; then
    step "downloading aarch64 wheels: $(echo $PINS)"
    WH="$CACHE/wheels-$KEY"; mkdir -p "$WH"
    # pip takes platform tags literally: list manylinux_2_28 (numpy >= 2.3) and 2014 (MNN); bookworm has glibc 2.36.
    "$HOST_PY" -m pip download -q --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 -d "$WH" $PINS >"$WORK/pip-download.log" 2>&1 \
        || { tail -5 "$WORK/pip-download.log" >&2; die "pip download of the aarch64 wheels failed: is PyPI reachable?"; }
    rm -rf "$DEPS.tmp"; mkdir -p "$DEPS.tmp"
    for w in "$WH"/*.whl; do unzip -q -o "$w" -d "$DEPS.tmp"; done
    mv "$DEPS.tmp" "$DEPS"
fi
export PYTHONPATH="$WORK/site-edgesam:$DEPS" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1

# --- 5. the bundle, and the x86 fp32 reference --------------------------------------------------
CHECKS="$REPO/scripts/arm_checks.py"
if [ -z "$BUNDLE" ]; then
    step "converting the tiny test model on the host (random weights, fp32, fp16 and int8)"
    BUNDLE="$WORK/bundle"
    env -u PYTHONPATH -u PYTHONNOUSERSITE "$HOST_PY" "$CHECKS" convert-tiny "$BUNDLE" \
        || die "converting the tiny model failed"
    # The fp16 decoder check needs trained weights (random logits are too flat to say anything).
    step "converting the trained demo model on the host (fp32) for the fp16 decoder check"
    DEC_BUNDLE="$WORK/demo"
    env -u PYTHONPATH -u PYTHONNOUSERSITE "$HOST_PY" "$CHECKS" convert-demo "$DEC_BUNDLE" \
        || die "converting the demo model failed"
else
    DEC_BUNDLE="$BUNDLE"
fi
step "x86 fp32 reference"
mkdir -p "$WORK/x86" "$WORK/arm"
env -u PYTHONPATH -u PYTHONNOUSERSITE "$HOST_PY" "$CHECKS" reference "$BUNDLE" "$IMAGE" "$WORK/x86" \
    --decoder-bundle "$DEC_BUNDLE" || die "the x86 reference run failed"

# --- 6. the ARM checks, each in a fresh emulated interpreter -------------------------------------
# qemu-user cannot exec an aarch64 child from inside the emulator, so each check is its own process.
step "ARM: platform and MNN features"
arm "$CHECKS" platform "$WORK/arm" || die "the aarch64 python could not import MNN and edgesam"
step "ARM: torch-free import"
arm "$CHECKS" notorch "$WORK/arm" || echo "arm-lane: check notorch FAILED" >&2
step "ARM: edgesam segment, MNN fp32"
arm "$CHECKS" segment "$BUNDLE" "$IMAGE" "$WORK/x86" "$WORK/arm" || echo "arm-lane: check segment FAILED" >&2
step "ARM: decoder and encoder at precision low (fp16 arithmetic)"
arm "$CHECKS" fp16 "$BUNDLE" "$WORK/x86" "$WORK/arm" --decoder-bundle "$DEC_BUNDLE" || echo "arm-lane: check fp16 FAILED" >&2
if [ -f "$WORK/x86/encoder_int8.npz" ]; then
    step "ARM: the int8 encoder in int8 arithmetic (sdot/i8mm)"
    arm "$CHECKS" int8 "$BUNDLE" "$WORK/x86" "$WORK/arm" || echo "arm-lane: check int8 FAILED" >&2
elif [ "$BUNDLE" = "$WORK/bundle" ]; then
    echo "arm-lane: check int8 FAILED: the lane's tiny bundle has no int8 MNN files" >&2
else  # a bundle given on the command line, converted without int8: nothing to check, and said so
    echo '{"ok": true, "skipped": "the bundle has no int8 MNN files", "failures": []}' > "$WORK/arm/int8.json"
fi

# CPU seconds (user + sys) of every process the lane waited for: wall time alone says more about the
# host's load than about the lane.
if [ "$BUNDLE" = "$WORK/bundle" ]; then  # the lane's own bundles (not a bundle given on the command line)
    step "SAM 2: converting the tiny test model and a seeded random sam2.1_hiera_t on the host"
    env -u PYTHONPATH -u PYTHONNOUSERSITE "$HOST_PY" "$CHECKS" convert-sam2 "$WORK/sam2_tiny" "$WORK/sam2_t" \
        || die "converting the SAM 2 models failed"
    env -u PYTHONPATH -u PYTHONNOUSERSITE "$HOST_PY" "$CHECKS" sam2-reference "$WORK/sam2_tiny" "$WORK/sam2_t" \
        "$IMAGE" "$WORK/x86" || die "the x86 SAM 2 reference run failed"
    step "ARM: SAM 2 segment (tiny), its encoder and hiera_t's decoder at precision low"
    arm "$CHECKS" sam2 "$WORK/sam2_tiny" "$WORK/sam2_t" "$IMAGE" "$WORK/x86" "$WORK/arm" \
        || echo "arm-lane: check sam2 FAILED" >&2
else
    echo '{"ok": true, "skipped": "a bundle given on the command line: the SAM 2 checks run on the lane'"'"'s own", "failures": []}' \
        > "$WORK/arm/sam2.json"
fi

times > "$WORK/times.txt"  # in this shell: inside $( ) `times` would see a subshell with no children
CPU=$(tail -1 "$WORK/times.txt" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1]*60 + u[2] + s[1]*60 + s[2] }')
"$HOST_PY" "$CHECKS" report "$WORK/arm" --seconds $((SECONDS - T0)) --cpu "$CPU"
