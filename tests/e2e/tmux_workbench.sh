#!/usr/bin/env bash
# End-to-end: drive the fcwork TUI in tmux through queue -> metrics -> live mix edit -> detach/reattach
# -> entry detail -> help -> cancel -> quit, at each terminal size given (default: 80x24 and 60x20),
# then check that no capture shows a clipped value.
# Usage: tests/e2e/tmux_workbench.sh [COLSxROWS ...]
#   captures go to tests/e2e/artifacts/COLSxROWS/NN-step.txt
#   FCW=/path/to/command runs that instead of ./fcw (e.g. a wrapper around another venv's python -m fcwork.cli)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
fcw=${FCW:-$root/fcw}
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(80x24 60x20)
session="fcw-e2e-$$"
t0=$(date +%s)
tm() { tmux -L "$session" "$@"; }  # a tmux server of our own: other people's sessions are never touched

if ! command -v tmux >/dev/null; then
  echo "e2e: installing tmux" >&2
  apt-get install -y tmux >/dev/null
fi

template=$(mktemp -d /tmp/fcw-e2e-data.XXXXXX)
ws=""
log() { printf '[e2e %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

stop_workspace() {  # stop the supervisor/trainer of one workspace (only those of that workspace)
  local w=$1 pids
  [[ -n $w ]] || return 0
  pids=$(pgrep -f -- "$w" || true)
  if [[ -n $pids ]]; then
    log "stopping leftover processes of $w: $(echo $pids)"
    kill $pids 2>/dev/null || true
    sleep 2
    pids=$(pgrep -f -- "$w" || true)
    [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
  fi
}

cleanup() {
  local rc=$?
  tm kill-server 2>/dev/null || true
  stop_workspace "$ws"
  rm -rf "$template"
  if [[ $rc -eq 0 ]]; then rm -rf "$ws"; else log "workspace kept for inspection: $ws"; fi
  log "exit $rc"
}
trap cleanup EXIT

next_file() {  # next_file NAME EXT: sets $file to artifacts/SIZE/NN-NAME.EXT (NN counts up)
  step_no=$((step_no + 1))
  file="$art/$(printf '%02d' "$step_no")-$1.$2"
}

capture() {  # capture NAME: save the current screen as NN-NAME.txt
  next_file "$1" txt
  tm capture-pane -p -t "$session" > "$file"
}

wait_for_text() {  # wait_for_text NAME TIMEOUT_S PATTERN (grep -E on the screen text)
  local name=$1 timeout=$2 pattern=$3 deadline=$(( $(date +%s) + $2 ))
  while (( $(date +%s) < deadline )); do
    if tm capture-pane -p -t "$session" | grep -Eq -- "$pattern"; then
      capture "$name"; log "ok ($size): $name (/$pattern/)"; return 0
    fi
    sleep 0.5
  done
  capture "$name-FAILED"
  echo "e2e FAIL at step '$name' ($size): /$pattern/ not on screen within ${timeout}s; screen saved to $file:" >&2
  tm capture-pane -p -t "$session" >&2 || true
  exit 1
}

keys() { tm send-keys -t "$session" "$@"; sleep 0.4; }

start_tui() {
  tm new-session -d -s "$session" -x "$cols" -y "$rows" -c "$root" "$fcw --workspace $ws; sleep 600"
}

tui_running() { pgrep -f -- "fcwork(\.cli)? --workspace $ws" >/dev/null; }

# 1. Data, headlessly and once for every size, so the TUI part is quick.
log "preparing data in $template"
"$fcw" data prepare default --workspace "$template" > "$here/artifacts/00-data-prepare.log" 2>&1 \
  || { echo "e2e FAIL: data prepare failed, see $here/artifacts/00-data-prepare.log" >&2; exit 1; }
prof="$template/profiles/default.toml"
[[ -f $prof ]] || { echo "e2e FAIL: $prof missing after data prepare" >&2; exit 1; }
# Long enough base stage to still be running at reattach (we cancel it anyway); frequent checkpoints.
python3 - "$prof" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
s = s.replace("max_steps = 160", "max_steps = 2000", 1)
s = s.replace("checkpoint_every = 40", "checkpoint_every = 10", 1)
s = s.replace("eval_every = 40", "eval_every = 1000", 1)
open(p, "w").write(s)
PY
log "data ready"

run_at() {  # the whole drive at one terminal size
  size=$1 cols=${1%x*} rows=${1#*x} step_no=0
  art="$here/artifacts/$size"
  mkdir -p "$art"
  rm -f "$art"/*.txt
  ws=$(mktemp -d /tmp/fcw-e2e-ws.XXXXXX)
  cp -a "$template/." "$ws/"
  log "== $size in $ws"

  # 2. Start the TUI.
  start_tui
  wait_for_text first-paint 60 "F1 Manifest"
  wait_for_text profile-loaded 60 "python-stdlib"  # the sources of the loaded profile: keys act on it now

  # 3. Queue pane, add both stages through the picker, start.
  keys F3
  wait_for_text queue-pane 15 "Queue"
  keys a
  wait_for_text add-picker 15 "default / base"
  keys Enter
  wait_for_text queue-added-base 20 "base +queued"
  keys a
  wait_for_text add-picker-2 15 "default / anneal"
  keys Down Enter
  wait_for_text queue-added-anneal 20 "anneal +queued"
  keys s
  wait_for_text queue-running 90 "base +running"
  wait_for_text queue-supervisor 15 "supervisor pid [0-9]+"

  # 4. Metrics pane: wait for steps, then for every number under the plot.
  keys F4
  wait_for_text metrics-steps 180 "running +step [1-9][0-9]*/2000"
  wait_for_text metrics-loss 60 "train [0-9]"
  wait_for_text metrics-stats 60 "grad( norm)? [0-9]"

  # 5. Manifest pane: the first weight takes 0.5 on the first key, enter applies it; wait for the answer.
  keys F1
  wait_for_text manifest-pane 15 "Mix +live: run"
  keys Tab
  keys 0.5
  capture manifest-typed
  keys Enter
  wait_for_text mix-applied 120 "applied at step [0-9]+"

  # 6. Detach: kill the TUI session; the supervisor and trainer must keep running.
  tm kill-session -t "$session"
  sleep 3
  if ! pgrep -f "engine.jobs.supervisor $ws" >/dev/null; then
    echo "e2e FAIL ($size): no engine.jobs.supervisor process after closing the TUI" >&2; exit 1
  fi
  next_file processes-after-detach txt
  pgrep -af -- "$ws" > "$file" || true
  grep -q engine.train "$file" || { echo "e2e FAIL ($size): no engine.train process of $ws after closing the TUI" >&2; exit 1; }
  log "ok ($size): supervisor still running after detach"

  # 7. Reattach: a new session shows the running stage and its live mix (science 0.5 of 1.2 = 41.7%).
  start_tui
  wait_for_text reattach-paint 60 "python-stdlib"
  wait_for_text reattach-live-mix 30 "41\.7%"
  keys F3
  wait_for_text reattach-queue 30 "base +running"
  keys F4
  wait_for_text reattach-metrics 60 "running +step [1-9][0-9]*/2000"

  # 8. Queue: enter opens the running entry's detail (its mix history has the change); ? lists the keys.
  keys F3
  wait_for_text queue-before-detail 15 "base +running"
  keys Up Enter
  wait_for_text entry-detail 20 "mix history"
  wait_for_text entry-detail-request 20 "\(request 1\)"
  keys Escape
  keys ?
  wait_for_text help 15 "Keys of fcwork \(Queue\)"
  keys Escape

  # 9. Cancel from the Queue pane: first the queued anneal entry (row 2), then the running base (row 1),
  #    each confirmed with y. (Cancelling base first would make anneal fail: it inits from base.)
  wait_for_text queue-before-cancel 15 "base +running"
  keys Down
  keys c
  wait_for_text cancel-anneal-confirm 15 "anneal\) is queued: cancel it"
  keys y
  wait_for_text anneal-cancelled 30 "anneal +cancel"
  keys Up
  keys c
  wait_for_text cancel-base-confirm 15 "base\) is running: stop it"
  keys y
  wait_for_text base-cancelled 180 "base +cancel"
  next_file queue-list txt
  "$fcw" --workspace "$ws" queue list > "$file" 2>&1
  grep -Eq "failed" "$file" && { echo "e2e FAIL ($size): a queue entry failed, see $file" >&2; exit 1; }

  # 10. The trainer stops; the supervisor should go idle and exit by itself (--idle); cleanup kills it otherwise.
  for _ in $(seq 60); do pgrep -f -- "engine.train $ws" >/dev/null || break; sleep 0.5; done
  pgrep -f -- "engine.train $ws" >/dev/null && { echo "e2e FAIL ($size): the trainer still runs after cancel" >&2; exit 1; }
  for _ in $(seq 40); do pgrep -f -- "engine.jobs.supervisor $ws" >/dev/null || break; sleep 0.5; done
  next_file processes-at-end txt
  pgrep -af -- "$ws" > "$file" || true
  if pgrep -f -- "engine.jobs.supervisor $ws" >/dev/null; then
    log "note ($size): the supervisor was still running 20s after the queue emptied (cleanup stops it)"
  else
    log "ok ($size): supervisor exited by itself"
    wait_for_text queue-no-supervisor 15 "no supervisor"
  fi

  # 11. Quit: q asks first (as ctrl+q does), y quits; the process must end.
  keys q
  wait_for_text quit-confirm 15 "Quit fcwork\?"
  keys y
  for _ in $(seq 20); do tui_running || break; sleep 0.5; done
  capture after-quit
  tui_running && { echo "e2e FAIL ($size): fcwork still runs after q, y" >&2; exit 1; }
  log "ok ($size): q, y quit the TUI"

  # 12. Nothing clipped: no capture of the app shows an ellipsis (a value cut short), and every pane's
  #     footer ends with its quit key.
  local clipped
  clipped=$(grep -l "…" "$art"/*.txt || true)
  [[ -z $clipped ]] || { echo "e2e FAIL ($size): a value is cut short (…) in: $clipped" >&2; grep -n "…" $clipped >&2; exit 1; }
  for f in "$art"/*-{queue-pane,metrics-stats,manifest-pane,reattach-queue}.txt; do
    tail -n 1 "$f" | grep -Eq "q Quit *$" || { echo "e2e FAIL ($size): footer without its quit key in $f" >&2; exit 1; }
  done
  log "ok ($size): no clipped value in $(ls "$art"/*.txt | wc -l) captures"
  stop_workspace "$ws"
  rm -rf "$ws"
  ws=""
}

for size in "${sizes[@]}"; do
  run_at "$size"
done
log "PASS at ${sizes[*]} in $(( $(date +%s) - t0 ))s"
