#!/usr/bin/env bash
# End-to-end: drive the fcwork TUI in tmux through queue -> metrics -> live mix edit -> detach/reattach -> cancel.
# Usage: tests/e2e/tmux_workbench.sh        (captures go to tests/e2e/artifacts/NN-step.txt)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
art="$here/artifacts"
fcw="$root/fcw"
session="fcw-e2e-$$"
step_no=0
t0=$(date +%s)

if ! command -v tmux >/dev/null; then
  echo "e2e: installing tmux" >&2
  apt-get install -y tmux >/dev/null
fi

ws=$(mktemp -d /tmp/fcw-e2e-ws.XXXXXX)
mkdir -p "$art"
rm -f "$art"/*.txt

log() { printf '[e2e %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

cleanup() {
  local rc=$?
  tmux kill-session -t "$session" 2>/dev/null || true
  # Stop the supervisor/trainer this run started (only those of our workspace).
  local pids
  pids=$(pgrep -f -- "$ws" || true)
  if [[ -n $pids ]]; then
    log "stopping leftover processes of $ws: $(echo $pids)"
    kill $pids 2>/dev/null || true
    sleep 2
    pids=$(pgrep -f -- "$ws" || true)
    [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
  fi
  if [[ $rc -eq 0 ]]; then rm -rf "$ws"; else log "workspace kept for inspection: $ws"; fi
  log "exit $rc"
}
trap cleanup EXIT

next_file() {  # next_file NAME EXT: sets $file to artifacts/NN-NAME.EXT (NN counts up)
  step_no=$((step_no + 1))
  file="$art/$(printf '%02d' "$step_no")-$1.$2"
}

capture() {  # capture NAME: save the current screen as NN-NAME.txt
  next_file "$1" txt
  tmux capture-pane -p -t "$session" > "$file"
}

wait_for_text() {  # wait_for_text NAME TIMEOUT_S PATTERN (grep -E on the screen text)
  local name=$1 timeout=$2 pattern=$3 deadline=$(( $(date +%s) + $2 ))
  while (( $(date +%s) < deadline )); do
    if tmux capture-pane -p -t "$session" | grep -Eq -- "$pattern"; then
      capture "$name"; log "ok: $name (/$pattern/)"; return 0
    fi
    sleep 0.5
  done
  capture "$name-FAILED"
  echo "e2e FAIL at step '$name': /$pattern/ not on screen within ${timeout}s; screen saved to $file:" >&2
  tmux capture-pane -p -t "$session" >&2 || true
  exit 1
}

keys() { tmux send-keys -t "$session" "$@"; sleep 0.4; }

start_tui() {
  tmux new-session -d -s "$session" -x 100 -y 30 -c "$root" "$fcw --workspace $ws; sleep 600"
}

# 1. Data, headlessly, so the TUI part is quick.
log "workspace $ws: preparing data"
"$fcw" data prepare default --workspace "$ws" > "$art/00-data-prepare.log" 2>&1 \
  || { echo "e2e FAIL: data prepare failed, see $art/00-data-prepare.log" >&2; exit 1; }
prof="$ws/profiles/default.toml"
[[ -f $prof ]] || { echo "e2e FAIL: $prof missing after data prepare" >&2; exit 1; }
# Long enough base stage to still be running at reattach (we cancel it anyway); frequent checkpoints.
python3 - "$prof" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = s.replace("max_steps = 160", "max_steps = 2000", 1)
s = s.replace("checkpoint_every = 40", "checkpoint_every = 10", 1)
s = s.replace("eval_every = 40", "eval_every = 1000", 1)
open(p, "w").write(s)
PY
log "data ready"

# 2. Start the TUI.
start_tui
wait_for_text first-paint 60 "F1 Manifest"

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

# 4. Metrics pane: wait for steps.
keys F4
wait_for_text metrics-steps 180 "running +step [1-9][0-9]*/2000"
wait_for_text metrics-loss 60 "train [0-9]"

# 5. Manifest pane: edit the first mix weight, apply with Enter, wait for the acknowledgement.
keys F1
wait_for_text manifest-pane 15 "Mix: enter/ctrl"
keys Tab
keys C-u
keys 0.5
capture manifest-typed
keys Enter
wait_for_text mix-applied 120 "applied at step [0-9]+"

# 6. Detach: kill the TUI session; the supervisor and trainer must keep running.
tmux kill-session -t "$session"
sleep 3
if ! pgrep -f engine.jobs.supervisor >/dev/null; then
  echo "e2e FAIL: no engine.jobs.supervisor process after closing the TUI" >&2; exit 1
fi
next_file processes-after-detach txt
pgrep -af -- "$ws" > "$file" || true
grep -q engine.train "$file" || { echo "e2e FAIL: no engine.train process of $ws after closing the TUI" >&2; exit 1; }
log "ok: supervisor still running after detach"

# 7. Reattach: a new session shows the running stage.
start_tui
wait_for_text reattach-paint 60 "python-stdlib"
keys F3
wait_for_text reattach-queue 30 "base +running"
keys F4
wait_for_text reattach-metrics 60 "running +step [1-9][0-9]*/2000"

# 8. Cancel from the Queue pane: first the queued anneal entry (row 2), then the running base (row 1),
#    each confirmed with y. (Cancelling base first would make anneal fail: it inits from base.)
keys F3
wait_for_text queue-before-cancel 15 "base +running"
keys Up Down  # cursor starts on row 1 (Home does not move a DataTable row cursor)
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
grep -Eq "failed" "$file" && { echo "e2e FAIL: a queue entry failed, see $file" >&2; exit 1; }

# 9. The trainer stops; the supervisor should go idle and exit by itself (--idle); cleanup kills it otherwise.
for _ in $(seq 60); do pgrep -f -- "engine.train $ws" >/dev/null || break; sleep 0.5; done
pgrep -f -- "engine.train $ws" >/dev/null && { echo "e2e FAIL: the trainer still runs after cancel" >&2; exit 1; }
for _ in $(seq 40); do pgrep -f -- "engine.jobs.supervisor $ws" >/dev/null || break; sleep 0.5; done
next_file processes-at-end txt
pgrep -af -- "$ws" > "$file" || true
if pgrep -f -- "engine.jobs.supervisor $ws" >/dev/null; then
  log "note: the supervisor was still running 20s after the queue emptied (cleanup stops it)"
else
  log "ok: supervisor exited by itself"
fi
# 10. Quit the TUI with ctrl+q: its process must end.
keys C-q
for _ in $(seq 20); do pgrep -f -- "bin/fcwork --workspace $ws" >/dev/null || break; sleep 0.5; done
capture after-quit
pgrep -f -- "bin/fcwork --workspace $ws" >/dev/null && { echo "e2e FAIL: fcwork still runs after ctrl+q" >&2; exit 1; }
log "ok: ctrl+q quit the TUI"
log "PASS in $(( $(date +%s) - t0 ))s"
