#!/usr/bin/env bash
# Makes screenshots/*.png: every view of the real console on a running
# local cluster (./local-cluster with its own ports and directory), with
# uploads going on, a server in no shard, a node down (node 6, of the
# read-only shard 3: that shard's check fails), the other shards checked
# whole, and a dead-letter task. tmux runs the console; `capture-pane -e` keeps the colours and
# scripts/ansi2png.py draws them. For developers: CI does not run this.
#
#   scripts/screenshots.sh            (BACKPACK_PORT_OFFSET=700 by default)
#
# Needs: tmux, curl, python3 with Pillow, DejaVu fonts (installed with
# apt-get when missing), and ./local-cluster's needs (it builds release
# binaries).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/screenshots"
export BACKPACK_PORT_OFFSET="${BACKPACK_PORT_OFFSET:-700}"
off=$BACKPACK_PORT_OFFSET
dir="$(mktemp -d /tmp/backpack-screens.XXXXXX)"
export BACKPACK_LOCAL_DIR="$dir/cluster"
# Failing tasks reach the dead-letter set after 2 tries, not 10.
export BACKPACK_REPLICATOR_MAX_ATTEMPTS=2
# 122 columns: the line about shard 3 (node 6 down: Connection refused)
# fits whole, and the reconnecting banner leaves a gap before the clock.
cols=122 rows=30
zk="127.0.0.1:$((2181 + off))"
root=/backpack
bin="$here/target/release"
sock="backpack-screens-$$"

say() { printf 'screenshots: %s\n' "$*"; }

python=python3
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import PIL' 2>/dev/null; then python=$p; break; fi
done
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v curl >/dev/null || need+=(curl)
"$python" -c 'import PIL' 2>/dev/null || { need+=(python3-pil); python=/usr/bin/python3; }
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cleanup() {
  tmux -L "$sock" kill-server 2>/dev/null || true
  [ -f "$dir/node-7.pid" ] && kill "$(cat "$dir/node-7.pid")" 2>/dev/null || true
  "$here/local-cluster" stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

say "starting a local cluster in $dir (ports + $off)"
"$here/local-cluster" up </dev/null >"$dir/up.log" 2>&1 || { cat "$dir/up.log"; exit 1; }
adm() { "$bin/backpack-coordinator-$1" "$zk" "$root" "${@:2}" >/dev/null; }

# Small shards, so that the uploads below show on the gauges.
adm add-shard --replace 1 1,4 1gb
adm add-shard --replace 2 2,5 600mb
# Server 7 runs but is in no shard; node 6 (shard 3's, with 3) is down.
mkdir -p "$dir/node-7"
"$bin/backpack-node" "$dir/node-7" 127.0.0.1 $((10007 + off)) >"$dir/node-7.log" 2>&1 &
echo $! >"$dir/node-7.pid"
adm add-server 7 "http://127.0.0.1:$((10007 + off))"
kill "$(cat "$BACKPACK_LOCAL_DIR/run/node-6.pid")"

say "starting the console"
tmux -L "$sock" new-session -d -s c -x "$cols" -y "$rows" \
  "TERM=xterm-256color exec $bin/backpack-console $zk $root --log-file $dir/console.log"
screen() { tmux -L "$sock" capture-pane -p -t c; }
wait_for() {
  for _ in $(seq 1 150); do screen | grep -qF -- "$1" && return 0; sleep 0.2; done
  screen; say "never saw '$1'"; exit 1
}
keys() { tmux -L "$sock" send-keys -t c "$@"; sleep 0.4; }
shot() {
  sleep "${2:-0.6}"
  tmux -L "$sock" capture-pane -e -p -t c >"$dir/$1.ans"
  "$python" "$here/scripts/ansi2png.py" "$dir/$1.ans" "$out/$1.png" "$cols" "$rows"
  say "$out/$1.png"
}
wait_for "● connected"

say "uploading for 20 s"
upload() {
  local n=$1 c=$((12001 + off + n % 2))
  head -c $(((RANDOM % 40 + 10) * 40000)) /dev/urandom >"$dir/up-$n"
  curl -fsS -X PUT --data-binary @"$dir/up-$n" "http://127.0.0.1:$c/photos/2026/11/25/img-$n.jpg" >/dev/null || true
  rm -f "$dir/up-$n"
}
end=$((SECONDS + 20)); n=0
while ((SECONDS < end)); do
  pids=()
  for _ in 1 2 3 4; do n=$((n + 1)); upload "$n" & pids+=($!); done
  wait "${pids[@]}"
  sleep 0.3
done
# Check the shards that took the uploads once their copies are made
# (whole; exit status 2 if a copy still lacks, which HEALTH then shows).
# Shard 3 cannot be checked (node 6 does not list its files): the
# console's `c` asks the elected checker for it below, which records the
# failure.
sleep 2
"$bin/backpack-coordinator-check-shard" "$zk" "$root" 1 2 || true
# A task whose source lacks the file: it fails twice and goes dead.
"$bin/backpack-replicator-push" "$zk" "$root" "127.0.0.1:$((13001 + off)),127.0.0.1:$((13002 + off))" \
  backpack-queue 1 4 /photos/2026/11/24/lost.jpg >/dev/null
# Uploads keep going while the pictures are taken.
( while :; do n=$((n + 1)); upload "$n"; sleep 0.2; done ) &
uploader=$!
trap 'kill $uploader 2>/dev/null || true; cleanup' EXIT
wait_for "1 dead"

mkdir -p "$out"
keys 1; keys G; keys c; keys y
wait_for "check failed"
keys g; shot shards
keys 2; shot servers
keys 3; shot queue
keys 4; shot daemons
keys 5; shot events
keys 1; keys '?'; shot help
keys Escape; keys Enter; shot details
keys Escape; keys a; keys Space; keys Down; keys Down; shot add-shard
keys Escape; keys G; keys e; shot enable-confirm
keys n; keys R; shot repair-confirm
keys n; keys 2; keys / ; tmux -L "$sock" send-keys -t c -l "no shard"; keys Enter; shot filter
keys Escape
keys 1; keys ':'; tmux -L "$sock" send-keys -t c -l "add-shard 4 7"; keys Space; shot command-line
keys Escape
kill $uploader 2>/dev/null || true
# Lose ZooKeeper: the banner, and the last known state dimmed.
kill -STOP "$(cat "$BACKPACK_LOCAL_DIR/run/zookeeper.pid")"
keys 1
wait_for "reconnecting"
shot disconnected 2
kill -CONT "$(cat "$BACKPACK_LOCAL_DIR/run/zookeeper.pid")"
say "done"
