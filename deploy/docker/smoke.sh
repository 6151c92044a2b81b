#!/usr/bin/env bash
# Smoke test of the splitwire image: the tail and the edge agent as two containers on this
# host's loopback, the way an operator runs them.
#
#   deploy/docker/smoke.sh                     # build (cached), plan ResNet-18, run both
#   deploy/docker/smoke.sh PLAN_DIR [CUT CODEC]  # an existing plan (default: its choice)
#   deploy/docker/smoke.sh --no-build ...      # take the image as it is
#
# Each container mounts only its side's pack of the plan (`splitwire plan pack`): the tail the
# cloud's (no head.pt2), the agent the edge's (no tail.pt2).
# Checks, each fatal: the tail container (read-only root, no capabilities, pack mounted :ro,
# token mounted under /run/secrets) turns `healthy` through the image's own HEALTHCHECK and
# `splitwire health` from the host answers SERVING; an agent container sends FRAMES frames and
# every one comes back "source": "remote"; the tail's metrics count them; the tail's process
# runs as a non-root uid; /plans is a read-only mount (a write fails with EROFS); `docker stop`
# (SIGTERM) ends the tail with exit code 0. Every server listens on 127.0.0.1 only.
# Prints a summary with the timings; exit 0 when every check passed, 1 otherwise, 2 bad usage.
#
# Environment: SPLITWIRE_IMAGE (NAME:TAG, default splitwire:latest), SPLITWIRE (the host's CLI, default
# .venv/bin/splitwire; without one the image plans and probes), FRAMES (30), FPS (10),
# SMOKE_KEEP=1 keeps the work directory and the tail's log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
image=${SPLITWIRE_IMAGE:-splitwire:latest}
host_cli=${SPLITWIRE:-$root/.venv/bin/splitwire}
frames=${FRAMES:-30}
fps=${FPS:-10}
build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
if [ $# -gt 3 ] || [ $# -eq 2 ]; then echo "usage: deploy/docker/smoke.sh [--no-build] [PLAN_DIR [CUT CODEC]]" >&2; exit 2; fi
plan_arg=${1:-}
cut=${2:-}
codec=${3:-}

log() { printf 'smoke.sh: %s\n' "$*" >&2; }
fail() { printf 'smoke.sh: FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
docker_=(docker)
docker info >/dev/null 2>&1 || ! sudo -n docker info >/dev/null 2>&1 || docker_=(sudo docker)
dk() { "${docker_[@]}" "$@"; }

run_id=$$
tail_name=splitwire-smoke-tail-$run_id
edge_name=splitwire-smoke-edge-$run_id
work=$(mktemp -d "${TMPDIR:-/tmp}/splitwire-smoke.XXXXXX")
cleanup() {
    dk rm -f "$tail_name" "$edge_name" >/dev/null 2>&1 || true
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# The containers run as uid 10001: the work directory must be searchable by it.
chmod 0755 "$work"

# --- image ------------------------------------------------------------------------------------
base_s=cached
image_s="not built (--no-build)"
if [ "$build" = 1 ]; then
    log "building: deploy/docker/build.sh"
    # build.sh's SPLITWIRE_IMAGE is the repository (it tags VERSION and latest).
    { SPLITWIRE_IMAGE=${image%:*} "$here/build.sh" 2>&1 >/dev/null | tee "$work/build.log" >&2; } \
        || fail "build.sh failed"
    base_s=$(sed -n 's/.*base: .* made in \([0-9.]*\) s.*/\1 s/p' "$work/build.log")
    base_s=${base_s:-cached}
    image_s=$(sed -n 's/.*image: .* built in \([0-9.]*\) s.*/\1 s/p' "$work/build.log")
fi
dk image inspect "$image" >/dev/null 2>&1 || fail "no image $image: run deploy/docker/build.sh"
image_mb=$(dk image inspect "$image" --format '{{.Size}}' | awk '{ printf "%.0f", $1 / 1e6 }')

# --- plan -------------------------------------------------------------------------------------
# With the host's CLI when there is one, else with the image (as this user, into $work; a plan
# given on the command line is mounted read-only at its own path).
cli() {
    if [ -x "$host_cli" ]; then
        "$host_cli" "$@"
    else
        dk run --rm --network host --no-healthcheck --user "$(id -u):$(id -g)" \
            -v "$work:$work" ${plan_arg:+-v "$plan:$plan:ro"} "$image" "$@"
    fi
}
if [ -n "$plan_arg" ]; then
    [ -f "$plan_arg/plan.yaml" ] || fail "$plan_arg is not a plan directory (no plan.yaml)"
    plan=$(cd "$plan_arg" && pwd)
else
    plan=$work/plans/resnet18
    t0=$(now)
    log "planning ResNet-18 (one link, one codec, layer3.0 shipped: about a minute)"
    mkdir -p "$work/plans"
    cli plan --model zoo:resnet18 --input-shape 1,3,224,224 --edge-slowdown 4 --link wifi \
        --codec int8+zstd1 --jpeg-quality 75 --calibration 1 --repeats 1 --ship layer3.0 \
        --out "$plan" >"$work/plan.log" 2>&1 || { tail -n 20 "$work/plan.log" >&2; fail "splitwire plan failed"; }
    plan_s=$(since "$t0")
    # Stream through the split at layer3.0 (head on the edge, tail in the cloud), whatever the
    # planner chose on this machine's timings.
    cut=$(awk '/^  c[0-9]+:$/ { id = $1 } /^    name: layer3\.0$/ { sub(":", "", id); print id }' "$plan/plan.yaml")
    [ -n "$cut" ] || fail "the plan ships no layer3.0 cut"
    codec=int8+zstd1
fi
name=$(basename "$plan")
# Each side's pack, as the containers mount them.
mkdir -p "$work/packs"
for side in cloud edge; do
    cli plan pack "$plan" --side "$side" --out "$work/packs/$side" >"$work/pack-$side.log" 2>&1 \
        || { tail -n 20 "$work/pack-$side.log" >&2; fail "splitwire plan pack --side $side failed"; }
done
[ -z "$(find "$work/packs/cloud" -name head.pt2 -print -quit)" ] || fail "the cloud's pack holds a head"
[ -z "$(find "$work/packs/edge" -name tail.pt2 -print -quit)" ] || fail "the edge's pack holds a tail"
pack_mb() { du -sb "$1" | awk '{ printf "%.1f", $1 / 1e6 }'; }
cloud_mb=$(pack_mb "$work/packs/cloud")
edge_mb=$(pack_mb "$work/packs/edge")
unreadable=$(find "$work/packs" ! -perm -o=r -print -quit)
[ -z "$unreadable" ] || fail "$unreadable is not world-readable: uid 10001 in the container cannot read the pack"
start=()
[ -z "$cut" ] || start=(--cut "$cut" --codec "$codec" --policy fixed)

# --- secrets ----------------------------------------------------------------------------------
# The tail's accepted tokens (one a line) and the agent's token: the same random line here.
mkdir -m 0755 "$work/secrets"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/secrets/tokens"
echo >>"$work/secrets/tokens"
cp "$work/secrets/tokens" "$work/secrets/token"
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$work/secrets/tokens" "$work/secrets/token"
    chmod 0400 "$work/secrets/tokens" "$work/secrets/token"
else
    chmod 0444 "$work/secrets/tokens" "$work/secrets/token"
fi

# --- ports ------------------------------------------------------------------------------------
free_port() {
    local p
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || { echo "$p"; return; }
    done
    fail "no free loopback port found"
}
port=$(free_port)
mport=$(free_port)
[ "$port" != "$mport" ] || mport=$(free_port)
address=127.0.0.1:$port

# --- tail -------------------------------------------------------------------------------------
# The image's HEALTHCHECK command, asked every 2 s instead of 15 s so start-to-healthy is
# measured to 2 s.
hardening=(--read-only --tmpfs "/tmp:rw,size=64m" --cap-drop ALL --security-opt no-new-privileges)
log "tail: $image cloud --listen $address --plan /plans/$name (metrics 127.0.0.1:$mport)"
t0=$(now)
dk run -d --name "$tail_name" --network host "${hardening[@]}" --stop-timeout 30 \
    --health-interval 2s -e SPLITWIRE_HEALTH_ADDRESS="$address" \
    -v "$work/packs/cloud:/plans/$name:ro" -v "$work/secrets/tokens:/run/secrets/tokens:ro" \
    "$image" cloud --listen "$address" --plan "/plans/$name" --metrics "127.0.0.1:$mport" \
    --token-file /run/secrets/tokens --threads 1 >/dev/null
status=starting
while [ "$status" != healthy ]; do
    [ "$(dk inspect -f '{{.State.Running}}' "$tail_name")" = true ] || {
        dk logs --tail 30 "$tail_name" >&2 || true; fail "the tail container exited"; }
    awk -v t="$(since "$t0")" 'BEGIN { exit !(t > 180) }' && {
        dk logs --tail 30 "$tail_name" >&2 || true; fail "the tail was not healthy within 180 s (status $status)"; }
    sleep 0.5
    status=$(dk inspect -f '{{.State.Health.Status}}' "$tail_name")
done
healthy_s=$(since "$t0")
log "tail: healthy after $healthy_s s"
if [ -x "$host_cli" ]; then probe_from="the host ($host_cli)"; else probe_from="a probe container"; fi
host_health=$(cli health --timeout 5 "$address") || fail "splitwire health $address from $probe_from: $host_health"
[ "$host_health" = SERVING ] || fail "splitwire health from $probe_from answered $host_health"

# --- checks inside the tail -------------------------------------------------------------------
exec_uid=$(dk exec "$tail_name" id -u)
# shellcheck disable=SC2016  # awk's $2
pid1_uid=$(dk exec "$tail_name" awk '/^Uid:/ { print $2 }' /proc/1/status)
if [ "$exec_uid" = 0 ] || [ "$pid1_uid" = 0 ]; then
    fail "the tail runs as root (exec uid $exec_uid, pid 1 uid $pid1_uid)"
fi
mount_rw=$(dk inspect -f '{{range .Mounts}}{{if eq .Destination "/plans/'"$name"'"}}{{.RW}}{{end}}{{end}}' "$tail_name")
[ "$mount_rw" = false ] || fail "/plans/$name is mounted read-write ($mount_rw)"
if write_err=$(dk exec "$tail_name" touch "/plans/$name/.write-test" 2>&1); then
    fail "writing into /plans/$name succeeded"
fi
case "$write_err" in *"Read-only file system"*) ;; *) fail "a write into /plans failed, but not as read-only: $write_err" ;; esac
secret_uid=$(dk exec "$tail_name" stat -c %u /run/secrets/tokens)

# --- agent ------------------------------------------------------------------------------------
log "agent: $image edge --cloud $address --plan /plans/$name ${start[*]} ($frames frames at $fps fps)"
t0=$(now)
edge_rc=0
dk run --name "$edge_name" --rm --network host --no-healthcheck "${hardening[@]}" \
    -v "$work/packs/edge:/plans/$name:ro" -v "$work/secrets/token:/run/secrets/token:ro" \
    "$image" edge --cloud "$address" --plan "/plans/$name" "${start[@]}" --source synthetic \
    --frames "$frames" --fps "$fps" --token-file /run/secrets/token --output - --log-every 0 \
    >"$work/frames.jsonl" 2>"$work/edge.log" || edge_rc=$?
edge_s=$(since "$t0")
[ "$edge_rc" = 0 ] || { tail -n 20 "$work/edge.log" >&2; fail "the agent exited with $edge_rc"; }
lines=$(grep -c . "$work/frames.jsonl" || true)
remote=$(grep -c '"source": *"remote"' "$work/frames.jsonl" || true)
[ "$lines" = "$frames" ] || fail "the agent printed $lines frame lines, expected $frames"
[ "$remote" = "$frames" ] || {
    grep -v '"source": *"remote"' "$work/frames.jsonl" | head -n 3 >&2
    fail "$remote of $frames frames came back remote"; }
summary_line=$(grep -i "frames" "$work/edge.log" | tail -n 1 || true)
results=$(curl -fsS "http://127.0.0.1:$mport/metrics" 2>/dev/null \
    | awk '/^splitwire_results_total\{/ { n += $NF } END { printf "%d", n }') || results=unavailable
[ "$results" = unavailable ] || [ "$results" -ge "$frames" ] \
    || fail "the tail's splitwire_results_total is $results, expected >= $frames"

# --- graceful stop ----------------------------------------------------------------------------
t0=$(now)
dk stop "$tail_name" >/dev/null
stop_s=$(since "$t0")
exit_code=$(dk inspect -f '{{.State.ExitCode}}' "$tail_name")
oom=$(dk inspect -f '{{.State.OOMKilled}}' "$tail_name")
if [ "${SMOKE_KEEP:-0}" = 1 ]; then dk logs "$tail_name" >"$work/tail.log" 2>&1 || true; fi
[ "$exit_code" = 0 ] || { dk logs --tail 20 "$tail_name" >&2 || true; fail "docker stop: the tail exited with $exit_code (OOM killed: $oom)"; }
grep -q Traceback <(dk logs "$tail_name" 2>&1) && fail "the tail's log has a traceback"

cat <<EOF
splitwire image smoke test: PASS
  image                   $image ($image_mb MB), revision $(dk image inspect "$image" --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' | cut -c1-12)
  base image build        $base_s
  image build             ${image_s:-?}
  plan                    $plan${plan_s:+ (made in $plan_s s)}${cut:+, cut $cut codec $codec}
  packs                   the tail mounts the cloud's ($cloud_mb MB), the agent the edge's ($edge_mb MB)
  tail start to healthy   $healthy_s s (image HEALTHCHECK, probed every 2 s); splitwire health from $probe_from: $host_health
  tail user               uid $pid1_uid (pid 1), token file owned by uid $secret_uid, /plans read-only (EROFS)
  frames answered         $remote/$frames remote in $edge_s s at $fps fps; tail metrics: $results results
  agent summary           ${summary_line:-?}
  docker stop (SIGTERM)   exit code $exit_code after $stop_s s
EOF
