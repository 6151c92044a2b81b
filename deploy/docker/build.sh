#!/usr/bin/env bash
# Build the splitwire image (tail and edge agent) on this machine, from nothing but Debian's
# package mirror and PyPI: no container registry is needed.
#
#   deploy/docker/build.sh            # the committed HEAD
#   deploy/docker/build.sh --worktree # the working tree as it is (tracked + untracked, minus .gitignore)
#
# Phases (one line each on stderr): tools (docker.io, debootstrap), daemon (starts dockerd when
# none answers, log in $SPLITWIRE_DOCKERD_LOG), base (splitwire-base:bookworm from debootstrap,
# made once and then reused), context (project source, constraints.txt, the torch wheel), image
# (docker build -t splitwire:VERSION -t splitwire:latest). Running it again only rebuilds what
# changed. Exit codes: 0 built, 1 a phase failed (the message says which and why), 2 bad usage.
#
# Environment:
#   SPLITWIRE_IMAGE         repository name, no tag (default splitwire)
#   SPLITWIRE_BASE_IMAGE    base image (default splitwire-base:bookworm; made here if missing)
#   SPLITWIRE_DEBIAN_MIRROR debootstrap mirror (default http://deb.debian.org/debian)
#   SPLITWIRE_TORCH_WHEEL   the CPU torch wheel (default: found through pip's find-links)
#   SPLITWIRE_DOCKERD_ARGS  extra dockerd options when this script starts it
#   SPLITWIRE_DOCKERD_LOG   dockerd's log (default /tmp/splitwire-dockerd.log)
#   SPLITWIRE_EXTRAS        pip extras baked in (default none; e.g. pretrained)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
image=${SPLITWIRE_IMAGE:-splitwire}
case "${image##*/}" in *:*) echo "build.sh: SPLITWIRE_IMAGE=$image: give the repository without a tag (VERSION and latest are tagged)" >&2; exit 2 ;; esac
base_image=${SPLITWIRE_BASE_IMAGE:-splitwire-base:bookworm}
mirror=${SPLITWIRE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
dockerd_log=${SPLITWIRE_DOCKERD_LOG:-/tmp/splitwire-dockerd.log}
extras=${SPLITWIRE_EXTRAS:-}
source_mode='head'
case "${1:-}" in
    "") ;;
    --worktree) source_mode='worktree' ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: deploy/docker/build.sh [--worktree]" >&2; exit 2 ;;
esac

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
sudo_=()
[ "$(id -u)" = 0 ] || sudo_=(sudo)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    log "tools: installing ${pkgs}(Debian packages)"
    "${sudo_[@]}" apt-get update -qq || die "tools: apt-get update failed"
    # shellcheck disable=SC2086
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null \
        || die "tools: apt-get install $pkgs failed"
else
    log "tools: docker, dockerd and debootstrap present"
fi

# --- daemon -----------------------------------------------------------------------------------
# The image is built and run by root's daemon; a user not in the docker group goes through sudo.
docker_=(docker)
if ! docker info >/dev/null 2>&1 && [ ${#sudo_[@]} -gt 0 ] && sudo -n docker info >/dev/null 2>&1; then
    docker_=(sudo docker)
fi
start_dockerd() {
    # setsid + nohup: the daemon outlives this script (the images and containers need it).
    # shellcheck disable=SC2086
    "${sudo_[@]}" sh -c "setsid nohup dockerd $* >>'$dockerd_log' 2>&1 </dev/null &"
    for _ in $(seq 60); do
        "${sudo_[@]}" docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}
if "${docker_[@]}" info >/dev/null 2>&1; then
    log "daemon: dockerd answers ($("${docker_[@]}" version --format '{{.Server.Version}}' 2>/dev/null))"
else
    log "daemon: no dockerd answers; starting one (log: $dockerd_log)"
    # Containers run with --network host, so a daemon that cannot make its bridge is still
    # good enough: retry without iptables and bridge before giving up.
    if ! start_dockerd "${SPLITWIRE_DOCKERD_ARGS:-}"; then
        log "daemon: dockerd did not come up; retrying with --iptables=false --bridge=none"
        pid=$(cat /var/run/docker.pid 2>/dev/null || true)
        [ -z "$pid" ] || "${sudo_[@]}" kill "$pid" 2>/dev/null || true
        sleep 2
        start_dockerd "${SPLITWIRE_DOCKERD_ARGS:-} --iptables=false --bridge=none" || {
            tail -n 20 "$dockerd_log" >&2 || true
            die "daemon: dockerd did not start within 60 s (its log is above and in $dockerd_log)"
        }
    fi
    [ ${#sudo_[@]} -eq 0 ] || docker info >/dev/null 2>&1 || docker_=(sudo docker)
    log "daemon: dockerd $("${docker_[@]}" version --format '{{.Server.Version}}') is up"
fi
dk() { "${docker_[@]}" "$@"; }

# --- base -------------------------------------------------------------------------------------
if dk image inspect "$base_image" >/dev/null 2>&1; then
    log "base: $base_image present (cached; 'docker rmi $base_image' to remake it)"
else
    [ "$base_image" = splitwire-base:bookworm ] || die "base: $base_image is missing (only splitwire-base:bookworm is made here)"
    t0=$(now)
    log "base: debootstrap --variant=minbase bookworm from $mirror (a few minutes)"
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/splitwire-rootfs.XXXXXX")
    trap '"${sudo_[@]}" rm -rf "$rootfs"' EXIT
    "${sudo_[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
        >"$rootfs.debootstrap.log" 2>&1 || {
        tail -n 20 "$rootfs.debootstrap.log" >&2
        die "base: debootstrap failed (log above, full log in $rootfs.debootstrap.log)"
    }
    # Updates and security fixes too, not only the release; no package lists or .debs kept.
    "${sudo_[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
    "${sudo_[@]}" sh -c "rm -rf '$rootfs'/var/lib/apt/lists/* '$rootfs'/var/cache/apt/archives/*.deb '$rootfs'/var/log/bootstrap.log"
    "${sudo_[@]}" tar -C "$rootfs" --numeric-owner -c . \
        | dk import --change 'CMD ["/bin/bash"]' \
            --message "debootstrap --variant=minbase bookworm $mirror" - "$base_image" >/dev/null \
        || die "base: docker import failed"
    "${sudo_[@]}" rm -rf "$rootfs" "$rootfs.debootstrap.log"
    trap - EXIT
    log "base: $base_image made in $(since "$t0") s ($(dk image inspect "$base_image" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
fi

# --- context ----------------------------------------------------------------------------------
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -n 1)
[ -n "$version" ] || die "context: no version = \"...\" in $root/pyproject.toml"
revision=$(git -C "$root" rev-parse HEAD)
wheel=${SPLITWIRE_TORCH_WHEEL:-}
torch_pin=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$root/constraints.txt")
[ -n "$torch_pin" ] || die "context: constraints.txt pins no torch==VERSION"
if [ -z "$wheel" ]; then
    # Where this machine's pip finds local wheels (pip config's find-links), then /opt/wheels.
    links=$(pip config get global.find-links 2>/dev/null || python3 -m pip config get global.find-links 2>/dev/null || true)
    for dir in $links /opt/wheels; do
        dir=${dir#file://}
        for candidate in "$dir"/torch-"$torch_pin"+cpu-*.whl; do
            [ -f "$candidate" ] && { wheel=$candidate; break 2; }
        done
    done
    [ -n "$wheel" ] || die "context: no torch-$torch_pin+cpu wheel in pip's find-links ($links) or /opt/wheels; set SPLITWIRE_TORCH_WHEEL"
fi
[ -f "$wheel" ] || die "context: torch wheel $wheel does not exist"
context=$(mktemp -d "${TMPDIR:-/tmp}/splitwire-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/src" "$context/wheels"
if [ "$source_mode" = head ]; then
    git -C "$root" archive --format=tar HEAD | tar -x -C "$context/src"
    if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
        log "context: note: the working tree has uncommitted changes; building HEAD (--worktree builds them)"
    fi
else
    # Tracked and untracked files, minus what .gitignore excludes (.venv, out/, build/, ...).
    # shellcheck disable=SC2016  # $1 belongs to the inner sh
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -I{} sh -c 'test ! -e "$1" || printf "%s\0" "$1"' _ {} \
        | tar --null -T - -c) | tar -x -C "$context/src"
    revision="$revision-worktree"
fi
# The wheelhouse: every wheel the image installs, fetched here by this machine's pip (its index,
# find-links, proxy and CA), for the image's interpreter (CPython 3.11, glibc 2.36), under
# constraints.txt. pip in the build then needs no index. The torch wheel goes in first (a hard
# link: ~190 MB) so that pip takes it rather than any other build of the pinned version.
ln "$wheel" "$context/wheels/" 2>/dev/null || cp "$wheel" "$context/wheels/"
pip_=()
for py in python3 "$root/.venv/bin/python"; do
    if "$py" -m pip --version >/dev/null 2>&1; then pip_=("$py" -m pip); break; fi
done
[ ${#pip_[@]} -gt 0 ] || die "context: no pip on this machine (apt-get install python3-pip, or make the .venv)"
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"${pip_[@]}" download --dest "$context/wheels" --find-links "$context/wheels" \
    -c "$context/src/constraints.txt" --only-binary=:all: "${platforms[@]}" \
    --python-version 3.11 --implementation cp --abi cp311 \
    "torch==$torch_pin" "$context/src${extras:+[$extras]}" 'setuptools>=69' \
    >"$context.pip.log" 2>&1 || {
    grep -v "is ignored: it is neither a file nor a directory" "$context.pip.log" | tail -n 20 >&2
    die "context: pip download of the image's wheels failed (log above, full log in $context.pip.log)"
}
rm -f "$context.pip.log"
torches=$(cd "$context/wheels" && echo torch-*.whl)
[ "$torches" = "$(basename "$wheel")" ] || die "context: the wheelhouse holds torch wheels '$torches', expected only $(basename "$wheel")"
# pip download built the project's metadata in place: start the image from a clean source tree.
rm -rf "$context/src/"*.egg-info "$context/src/build"
cp "$here/Dockerfile" "$context/Dockerfile"
# Nothing in this context should be skipped; this only guards against stray caches.
printf '%s\n' '**/__pycache__' '**/*.pyc' 'src/.venv' 'src/out' 'src/build' 'src/*.egg-info' >"$context/.dockerignore"
log "context: $source_mode at ${revision:0:12}, $(find "$context/wheels" -name '*.whl' | wc -l) wheels ($(basename "$wheel") among them), $(du -sh "$context" | cut -f1)"

# --- image ------------------------------------------------------------------------------------
t0=$(now)
log "image: docker build -t $image:$version -t $image:latest (first build ~5-10 min; cached after)"
# --network host: apt and pip in the build reach the mirrors the way the host does, whatever
# the daemon's bridge can do. The legacy builder: this daemon may have no BuildKit.
DOCKER_BUILDKIT=0 dk build --network host \
    --build-arg BASE_IMAGE="$base_image" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg EXTRAS="$extras" \
    -t "$image:$version" -t "$image:latest" "$context" >"$context.build.log" 2>&1 || {
    tail -n 30 "$context.build.log" >&2
    die "image: docker build failed (log above, full log in $context.build.log)"
}
rm -f "$context.build.log"
size=$(dk image inspect "$image:$version" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')
log "image: $image:$version ($size) built in $(since "$t0") s"
echo "$image:$version"
