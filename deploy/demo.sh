#!/usr/bin/env bash
# A tail and an edge agent on loopback, the way they run on two machines: `make demo` calls this
# after planning. Usage: deploy/demo.sh PLAN_DIR [FRAMES] [FPS|max] [CUT CODEC]
# FPS paces the synthetic camera; `max` (the default) feeds a frame whenever the agent's window
# has room, so no frame is dropped for outrunning the pipeline.
# Each side gets only what it runs: PLAN_DIR is packed (`splitwire plan pack`) into
# PLAN_DIR-cloud (plan.yaml and the tails) for the tail and PLAN_DIR-edge (plan.yaml, the heads
# and the whole model for the local fallback) for the agent, written afresh each run; their sizes
# are printed. Without CUT and CODEC the agent starts on the plan's choice under the adaptive
# policy. With PLAN_PUBLIC_KEY set, the packs and both runtimes refuse a plan not signed by it.
set -euo pipefail
plan=${1:?usage: deploy/demo.sh PLAN_DIR [FRAMES] [FPS|max] [CUT CODEC]}
plan=${plan%/}
frames=${2:-300}
fps=${3:-max}
pace=()
if [ "$fps" != max ]; then pace=(--fps "$fps"); fi
start=()
if [ $# -ge 5 ]; then start=(--cut "$4" --codec "$5" --policy fixed); fi
bin=${SPLITWIRE:-.venv/bin/splitwire}
trust=()
if [ -n "${PLAN_PUBLIC_KEY:-}" ]; then trust=(--plan-public-key "$PLAN_PUBLIC_KEY"); fi
py=$(dirname "$bin")/python
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address=127.0.0.1:$port

# The packs are written afresh (a pack is never written over a directory's files).
for side in cloud edge; do
    rm -rf "$plan-$side"
    "$bin" plan pack "$plan" --side "$side" --out "$plan-$side" "${trust[@]}" --json |
        "$py" -c 'import json, sys; p = json.load(sys.stdin); print("== the %s pack %s: %.1f MB in %d files (left out: %.1f MB the %s never runs)" % (p["side"], p["directory"], p["bytes"] / 1e6, len(p["files"]), p["left_out_bytes"] / 1e6, p["side"]))' >&2
done

"$bin" cloud --listen "$address" --plan "$plan-cloud" "${trust[@]}" --threads 1 &
tail_pid=$!
trap 'kill -TERM $tail_pid 2>/dev/null || true; wait $tail_pid 2>/dev/null || true' EXIT

# Wait until the tail's health check says SERVING (it loads every shipped tail first).
"$bin" health --wait 120 "$address" >/dev/null || { echo "the tail did not become SERVING within 120 s" >&2; exit 1; }

# Say what the plan chose and, when the demo streams through another option, that and why.
"$bin" plan show "$plan" "${trust[@]}" --json | "$py" -c '
import json, sys
plan = json.load(sys.stdin)
forced = sys.argv[1:]
def line(pick):
    kind = pick["baseline"] or "a split after " + pick["cut_name"]
    return "%s %s (%s)" % (pick["cut"], pick["codec"], kind)
print("== the plan picks, per link:", file=sys.stderr)
for pick in plan["links"]:
    print("     %-70s %s" % (pick["link"], line(pick)), file=sys.stderr)
print("   and over all links (robust): " + line(plan["choice"]), file=sys.stderr)
if forced:
    picked = any((p["cut"], p["codec"]) == tuple(forced) for p in plan["links"] + [plan["choice"]])
    if picked:
        print("== streaming through %s %s, one of those picks" % tuple(forced), file=sys.stderr)
    else:
        print("== streaming through %s %s, which the plan did NOT pick: the demo forces a split so "
              "that both halves run, the head in the agent and the tail in the tail process "
              "(run deploy/demo.sh without CUT CODEC to follow the plan)" % tuple(forced),
              file=sys.stderr)
' "${start[@]:1:1}" "${start[@]:3:1}"

if [ "$fps" = max ]; then
    echo "== edge agent: $frames frames from the synthetic camera, each fed when the agent has room" >&2
    echo "   (at most 4 frames in flight), tail at $address: the rate is what head + link + tail" >&2
    echo "   sustain on this machine, and no frame is dropped for outrunning them" >&2
else
    echo "== edge agent: $frames frames at $fps fps from the synthetic camera, tail at $address" >&2
    echo "   at most 4 frames in flight: when the camera outruns head + link + tail (here both run" >&2
    echo "   on this machine's cores), the newest frame replaces a waiting one and the replaced" >&2
    echo "   frame is reported dropped, reason window_full; the summary counts them" >&2
fi
"$bin" edge --cloud "$address" --plan "$plan-edge" "${trust[@]}" --source synthetic "${pace[@]}" \
    --frames "$frames" "${start[@]}" --output "$plan.frames.jsonl" --json --log-every 5
echo "== one line per frame in $plan.frames.jsonl" >&2
