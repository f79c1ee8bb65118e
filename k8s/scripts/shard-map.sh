#!/usr/bin/env bash
# Regenerates an overlay's shard map with `turbosparse shard-map` and keeps the overlay in step:
# entry i becomes pod turbosparse-expert-i (turbosparse-expert-i.turbosparse-expert:50051), the
# StatefulSet's replica count becomes the number of entries, and the model dimensions recorded
# next to the map (checked by test/deploy) come from the model's config.json.
#
#   k8s/scripts/shard-map.sh OVERLAY_DIR --model DIR --nodes N [--replicas R] [--memory-per-node GB]
#
# Run it from a checkout on a machine that has the model folder. It calls `turbosparse`; set
# TURBOSPARSE to run another build, e.g. TURBOSPARSE="node bin/turbosparse.js".
# Then: kubectl apply -k OVERLAY_DIR   (the new map's ConfigMap name rolls every pod that uses it)
set -euo pipefail

usage() {
  echo "usage: $0 OVERLAY_DIR --model DIR --nodes N [--replicas R] [--memory-per-node GB]" >&2
  exit 2
}

root=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 1 ] || usage
overlay=$1
shift
[ -f "$overlay/kustomization.yaml" ] || { echo "$overlay: no kustomization.yaml here" >&2; exit 2; }

model=""
nodes=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=${2:-}; args+=("$1" "${2:-}"); shift 2 || usage ;;
    --nodes) nodes=${2:-}; args+=("$1" "${2:-}"); shift 2 || usage ;;
    --replicas|--memory-per-node) args+=("$1" "${2:-}"); shift 2 || usage ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
done
[ -n "$model" ] && [ -n "$nodes" ] || usage
[ -f "$model/config.json" ] || { echo "--model $model: no config.json in that folder" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086  # TURBOSPARSE may be a command with arguments
${TURBOSPARSE:-turbosparse} shard-map "${args[@]}" --out "$tmp/generated.yaml"
node "$root/deploy/shard-map-addresses.js" "$tmp/generated.yaml" "$tmp/shard-map.yaml" \
  --name 'turbosparse-expert-{i}' --address '{name}.turbosparse-expert:50051'
node "$root/k8s/scripts/set-overlay-shard-map.js" "$overlay" "$tmp/shard-map.yaml" "$model/config.json"
