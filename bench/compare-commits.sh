#!/usr/bin/env bash
# Before/after of one bench in ONE run: builds two commits in their own git worktrees and runs the bench
# alternately (base, head, base, head, ...) so that the drift of a shared, noisy machine falls on both builds
# alike; prints each metric per round, the paired head/base ratio of every round and their median.
#
#   bench/compare-commits.sh [options] BASE [HEAD] -- BENCH [ARGS...]
#     BASE, HEAD   commits (HEAD defaults to this checkout's HEAD commit; uncommitted edits are not measured)
#     BENCH        a built bench relative to the repository root, e.g. dist/bench/cluster.js (run with node),
#                  or any command (run as given), started from each worktree's root
#   --rounds N     pairs of runs (default 3)
#   --metric 'LABEL=PATH[:up|:down]'   a number in the bench's final JSON line (repeatable; :up = higher is
#                  better, the default; :down = lower is better). PATH is dot-separated keys; [i] picks an array
#                  item, [k=v,k2=v2] the item whose fields match, e.g. 'results[mode=cluster:2,wire=f32].overhead_us_p50'
#                  or '[model=demo].runs[concurrency=16].tokensPerS'. Without --metric, defaults for the
#                  cluster and serving benches (by the JSON's "bench" field): every mode/wire's tokens/s, layer
#                  time and overhead (cluster), every model/concurrency's tokens/s and mean step (serving).
#   --bench-from REV   run REV's version of the bench in both trees: its source (dist/bench/X.js -> bench/X.ts)
#                  and the bench/ files it imports, checked out of REV over each worktree's before building, so
#                  that a bench changed between the commits measures the same way on both; without it each tree
#                  runs its own (the script says when bench/ differs)
#   --own-native   build the native addon in each worktree (its own native/build) instead of sharing this
#                  checkout's native/build
#   --root DIR     where the worktrees go (default /tmp; each is DIR/ab-<commit>, reused when it exists)
#   --timeout S    limit for one bench run (default 900 s)
#   --logs DIR     keep every run's stdout/stderr there (default: a new /tmp/ab-logs-XXXX)
#
# Each worktree gets symlinks to this checkout's node_modules and (unless --own-native) native/build, then
# `npm run gen:proto && npx tsc -p tsconfig.json` (what `npm run build:ts` does). Sharing native/build is
# right only while the C ABI (native/include/turbosparse.h) and the addon (native/addon) are the same in both
# commits: then both builds run the same kernels and the comparison measures the TypeScript side only. The
# script checks that and refuses otherwise (use --own-native then). The benches write their own models under
# the temp dir (bench/models.ts, bench/cluster.ts) and do not need ../shared.
#
# Output: the table on stdout, then one JSON line:
#   {"compare":..., "base":sha, "head":sha, "rounds":N, "command":[...], "metrics":[{"label","path","better",
#    "base":[...], "head":[...], "ratios":[...], "median_ratio", "worse_by"}]}
# where worse_by is how much worse head is, from the median ratio: 1 - ratio for higher-is-better metrics (the
# fraction of throughput lost), ratio - 1 for lower-is-better ones; negative = head better.
set -euo pipefail
shopt -s inherit_errexit

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

rounds=3
own_native=0
bench_from=''
root=/tmp
timeout_s=900
logs=''
metrics=()
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --metric) metrics+=("$2"); shift 2 ;;
    --own-native) own_native=1; shift ;;
    --bench-from) bench_from="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "compare-commits: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
bench=("$@")
if [[ ${#positional[@]} -lt 1 || ${#positional[@]} -gt 2 || ${#bench[@]} -eq 0 ]]; then
  echo "compare-commits: usage: bench/compare-commits.sh [options] BASE [HEAD] -- BENCH [ARGS...] (see --help)" >&2
  exit 2
fi
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "compare-commits: --rounds must be a positive integer, got '$rounds'" >&2; exit 2; }

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
base=$(git -C "$repo" rev-parse --verify "${positional[0]}^{commit}")
head=$(git -C "$repo" rev-parse --verify "${positional[1]:-HEAD}^{commit}")
bench_sha=''
bench_files=()
if [[ -n "$bench_from" ]]; then
  bench_sha=$(git -C "$repo" rev-parse --verify "${bench_from}^{commit}")
  entry=''
  for a in "${bench[@]}"; do if [[ "$a" =~ ^(\./)?dist/(bench/.*)\.js$ ]]; then entry="${BASH_REMATCH[2]}.ts"; break; fi; done
  [[ -n "$entry" ]] || { echo "compare-commits: --bench-from needs the bench as dist/bench/NAME.js in the command" >&2; exit 2; }
  # the entry and, transitively, the bench/ files it imports ('./name')
  todo=("$entry")
  while [[ ${#todo[@]} -gt 0 ]]; do
    f="${todo[0]}"; todo=("${todo[@]:1}")
    [[ " ${bench_files[*]-} " == *" $f "* ]] && continue
    src=$(git -C "$repo" show "$bench_sha:$f") || { echo "compare-commits: $f is not in ${bench_sha:0:7}" >&2; exit 2; }
    bench_files+=("$f")
    while read -r dep; do [[ -n "$dep" ]] && todo+=("bench/$dep.ts"); done < <(grep -oE "from '\./[^']+'" <<<"$src" | sed -E "s/from '\.\/([^']+)'/\1/")
  done
fi
[[ -n "$logs" ]] || logs=$(mktemp -d /tmp/ab-logs-XXXXXX)
mkdir -p "$logs"
say() { echo "compare-commits: $*" >&2; }

if [[ $own_native -eq 0 ]] && ! git -C "$repo" diff --quiet "$base" "$head" -- native/include native/addon; then
  echo "compare-commits: the C ABI or addon differs between ${base:0:7} and ${head:0:7} (native/include, native/addon): use --own-native" >&2
  exit 2
fi
if [[ $own_native -eq 0 ]] && ! git -C "$repo" diff --quiet "$base" "$head" -- native/src; then
  say "note: native/src differs between the commits; both run the shared native/build (this checkout's kernels)"
fi

if [[ -z "$bench_sha" ]] && ! git -C "$repo" diff --quiet "$base" "$head" -- bench; then
  say "note: bench/ differs between the commits and each tree runs its own (--bench-from REV runs one version in both)"
fi

# worktree COMMIT -> prints its path, built
prepare() {
  local sha="$1" wt="$root/ab-${1:0:12}"
  if [[ ! -e "$wt/.git" ]]; then
    say "worktree $wt for ${sha:0:7}"
    git -C "$repo" worktree add --detach "$wt" "$sha" >&2
  fi
  [[ "$(git -C "$wt" rev-parse HEAD)" == "$sha" ]] || { echo "compare-commits: $wt is not at $sha" >&2; exit 1; }
  ln -sfn "$repo/node_modules" "$wt/node_modules"
  if [[ $own_native -eq 1 ]]; then
    if [[ -L "$wt/native/build" ]]; then rm "$wt/native/build"; fi
    if [[ ! -f "$wt/native/build/Release/turbosparse_addon.node" ]]; then
      say "building native in $wt/native/build (-p 2)"
      (cd "$wt" && npx cmake-js compile -d native -O native/build -p 2 --log-level warn) >&2
    fi
  else
    if [[ -e "$wt/native/build" && ! -L "$wt/native/build" ]]; then
      echo "compare-commits: $wt/native/build is a real build (made with --own-native); remove it or pass --own-native" >&2
      exit 1
    fi
    ln -sfn "$repo/native/build" "$wt/native/build"
  fi
  # bench/: the tree's own back, then REV's bench files over it (--bench-from)
  git -C "$wt" reset -q -- bench
  git -C "$wt" checkout -q -- bench
  git -C "$wt" clean -fdq -- bench
  if [[ -n "$bench_sha" ]]; then git -C "$wt" checkout -q "$bench_sha" -- "${bench_files[@]}"; fi
  local stamp="$sha bench:${bench_sha:-own} ${bench_files[*]-}"
  if [[ "$(cat "$wt/dist/.ab-built" 2>/dev/null)" != "$stamp" ]]; then
    rm -f "$wt/dist/.ab-built"
    say "building TypeScript in $wt${bench_sha:+ (${bench_files[*]} from ${bench_sha:0:7})}"
    if ! (cd "$wt" && npm run --silent gen:proto && npx tsc -p tsconfig.json) >&2; then
      echo "compare-commits: the build in $wt failed${bench_sha:+ (with ${bench_files[*]} from ${bench_sha:0:7}: does that bench need newer sources?)}" >&2
      exit 1
    fi
    echo "$stamp" > "$wt/dist/.ab-built"
  fi
  echo "$wt"
}

base_wt=$(prepare "$base")
head_wt=$(prepare "$head")

cmd=("${bench[@]}")
if [[ "${cmd[0]}" == *.js || "${cmd[0]}" == *.cjs || "${cmd[0]}" == *.mjs ]]; then cmd=(node "${cmd[@]}"); fi

# run SIDE ROUND -> the bench's last JSON line into $logs/SIDE-ROUND.json
run_one() {
  local side="$1" r="$2" wt t0 t1
  if [[ "$side" == base ]]; then wt="$base_wt"; else wt="$head_wt"; fi
  t0=$(date +%s)
  say "round $r/$rounds: $side (${wt}) ${cmd[*]}"
  if ! (cd "$wt" && timeout --kill-after=10 "$timeout_s" "${cmd[@]}") >"$logs/$side-$r.out" 2>"$logs/$side-$r.err"; then
    echo "compare-commits: $side round $r failed; last lines of $logs/$side-$r.err:" >&2
    tail -n 20 "$logs/$side-$r.err" >&2
    exit 1
  fi
  t1=$(date +%s)
  grep -E '^[[:space:]]*[[{]' "$logs/$side-$r.out" | tail -n 1 > "$logs/$side-$r.json" || true
  [[ -s "$logs/$side-$r.json" ]] || { echo "compare-commits: no JSON line in $logs/$side-$r.out (pass the bench's --json?)" >&2; exit 1; }
  say "  $side round $r took $((t1 - t0)) s"
}

for ((r = 1; r <= rounds; r++)); do
  run_one base "$r"
  run_one head "$r"
done

# The table and the JSON line, from the saved JSON lines.
node - "$logs" "$rounds" "$base" "$head" "$bench_sha" "$(printf '%s\n' "${cmd[@]}")" "$(printf '%s\n' "${metrics[@]+"${metrics[@]}"}")" <<'EOF'
const fs = require('node:fs');
const [logs, roundsArg, base, head, benchFrom, cmdText, metricText] = process.argv.slice(2);
const rounds = Number(roundsArg);
const load = (side, r) => JSON.parse(fs.readFileSync(`${logs}/${side}-${r}.json`, 'utf8'));
const runs = { base: [], head: [] };
for (let r = 1; r <= rounds; r++) { runs.base.push(load('base', r)); runs.head.push(load('head', r)); }

// PATH: dot-separated keys; [i] an index, [k=v,...] the array item whose fields match (compared as strings).
function parsePath(p) {
  const steps = [];
  const re = /([^.[\]]+)|\[([^\]]*)\]/g;
  let m;
  while ((m = re.exec(p))) {
    if (m[1] !== undefined) steps.push({ key: m[1] });
    else if (/^\d+$/.test(m[2])) steps.push({ index: Number(m[2]) });
    else steps.push({ match: m[2].split(',').map((kv) => { const i = kv.indexOf('='); return [kv.slice(0, i), kv.slice(i + 1)]; }) });
  }
  return steps;
}
function get(obj, p) {
  let v = obj;
  for (const s of parsePath(p)) {
    if (v == null) return undefined;
    if (s.key !== undefined) v = v[s.key];
    else if (s.index !== undefined) v = Array.isArray(v) ? v[s.index] : undefined;
    else v = Array.isArray(v) ? v.find((x) => x && s.match.every(([k, val]) => String(x[k]) === val)) : undefined;
  }
  return typeof v === 'number' ? v : undefined;
}

function defaults(j) {
  const out = [];
  const first = Array.isArray(j) ? j[0] : j;
  if (first && first.bench === 'cluster') {
    for (const r of j.results) {
      // select by every identifying field the bench writes (older benches have no link/concurrency)
      const keys = ['mode', 'link', 'wire', 'concurrency'].filter((k) => r[k] !== undefined);
      const sel = `results[${keys.map((k) => `${k}=${r[k]}`).join(',')}]`;
      const name = [r.mode, r.link && r.link !== '-' && r.link !== 'loopback' ? r.link : '', r.wire ?? '',
        r.concurrency !== undefined ? `c=${r.concurrency}` : ''].filter(Boolean).join(' ');
      out.push({ label: `${name} tokens/s`, path: `${sel}.tokens_per_s`, better: 'up' });
      out.push({ label: `${name} experts per layer us`, path: `${sel}.layer_us_mean`, better: 'down' });
      if (r.overhead_us_mean !== undefined) {
        out.push({ label: `${name} overhead per layer us mean`, path: `${sel}.overhead_us_mean`, better: 'down' });
        out.push({ label: `${name} overhead per layer us p50`, path: `${sel}.overhead_us_p50`, better: 'down' });
      }
    }
  } else if (first && first.bench === 'serving') {
    for (const m of j) for (const r of m.runs) {
      const sel = `[model=${m.model}].runs[concurrency=${r.concurrency}]`;
      out.push({ label: `${m.model} c=${r.concurrency} tokens/s`, path: `${sel}.tokensPerS`, better: 'up' });
      out.push({ label: `${m.model} c=${r.concurrency} mean step ms`, path: `${sel}.meanStepMs`, better: 'down' });
    }
  } else {
    throw new Error('compare-commits: no default metrics for this bench\'s JSON; pass --metric LABEL=PATH');
  }
  return out;
}

const specs = metricText.trim()
  ? metricText.trim().split('\n').map((s) => {
      const eq = s.indexOf('=');
      if (eq <= 0) throw new Error(`compare-commits: --metric '${s}' is not LABEL=PATH[:up|:down]`);
      let p = s.slice(eq + 1);
      let better = 'up';
      const dir = /:(up|down)$/.exec(p);
      if (dir) { better = dir[1]; p = p.slice(0, -dir[0].length); }
      return { label: s.slice(0, eq), path: p, better };
    })
  : defaults(runs.base[0]);

const median = (xs) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); const n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const fmt = (x) => (x === undefined || !Number.isFinite(x) ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
const metrics = specs.map((s) => {
  const b = runs.base.map((j) => get(j, s.path));
  const h = runs.head.map((j) => get(j, s.path));
  if (b.every((x) => x === undefined) && h.every((x) => x === undefined)) {
    process.stderr.write(`compare-commits: metric '${s.label}': ${s.path} is no number in any run's JSON\n`);
  }
  const ratios = b.map((x, i) => (x !== undefined && h[i] !== undefined && x !== 0 ? h[i] / x : NaN));
  const mr = median(ratios);
  // fraction by which head is worse than base (negative = better), in the metric's direction
  const worse = Number.isFinite(mr) ? (s.better === 'up' ? 1 - mr : mr - 1) : NaN;
  return { ...s, base: b.map((x) => x ?? null), head: h.map((x) => x ?? null), ratios: ratios.map((x) => (Number.isFinite(x) ? x : null)),
    median_ratio: Number.isFinite(mr) ? mr : null, worse_by: Number.isFinite(worse) ? worse : null };
});

const cols = ['metric (better)'];
for (let r = 1; r <= rounds; r++) cols.push(`base ${r}`, `head ${r}`, `ratio ${r}`);
cols.push('median ratio head/base', 'head worse by');
console.log(`base ${base.slice(0, 7)}  head ${head.slice(0, 7)}${benchFrom ? `  bench/ from ${benchFrom.slice(0, 7)}` : ''}  ${rounds} round(s), order base,head per round`);
console.log(`| ${cols.join(' | ')} |`);
console.log(`| --- |${' ---: |'.repeat(cols.length - 1)}`);
for (const m of metrics) {
  const cells = [`${m.label} (${m.better === 'up' ? 'higher' : 'lower'})`];
  for (let r = 0; r < rounds; r++) cells.push(fmt(m.base[r] ?? undefined), fmt(m.head[r] ?? undefined), m.ratios[r] === null ? '-' : m.ratios[r].toFixed(3));
  cells.push(m.median_ratio === null ? '-' : m.median_ratio.toFixed(3), m.worse_by === null ? '-' : `${(m.worse_by * 100).toFixed(1)}%`);
  console.log(`| ${cells.join(' | ')} |`);
}
console.log(JSON.stringify({ compare: 'commits', base, head, bench_from: benchFrom || null, rounds, command: cmdText.trim().split('\n'), logs, metrics }));
EOF
