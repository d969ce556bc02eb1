#!/usr/bin/env bash
# A live cluster under attack trains to the same weights as an undisturbed one (issue 10).
#
#   tests/attack.sh F2D2N_LAUNCH PLAN_WORKER [PLAN]
#
# Runs `plan_worker PLAN` (default dp2: 20 training steps checked against serial training, then
# the XXH3 digest of each unit's weights) on 2 units under f2d2n_launch twice: once undisturbed,
# once while a hostile client (python3, loopback only) hammers every unit's port for the whole
# run: random bytes, challenges with forged proofs, frame-like bytes instead of a challenge,
# byte-at-a-time writes (slowloris) and 30 idle connections held open. Unit 1 starts a second
# after unit 0, so that unit 0 accepts the attacker's connections before the real one. The
# attacked run must pass its check and end with every unit's digest bit for bit the undisturbed
# run's. Bounded: each run under timeout(1) and the launcher's own --timeout; the attacker stops
# when the run ends.
set -euo pipefail
launch=$1
worker=$2
plan=${3:-dp2}
units=2
command -v python3 >/dev/null || { echo "attack.sh: skipped: python3 is not installed"; exit 77; }

# A base port with `units` free ports after it (the attacker must know where the units listen).
base=$(python3 - "$units" <<'EOF'
import socket, sys
n = int(sys.argv[1])
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p + n > 65000: continue
    ok = True
    for k in range(n):
        t = socket.socket()
        try: t.bind(("127.0.0.1", p + k))
        except OSError: ok = False
        t.close()
    if ok: print(p); break
EOF
)
[[ -n "$base" ]] || { echo "attack.sh: no free ports"; exit 1; }

digests() {  # the sorted "unit R ... weights digest D" lines of a run's output
  grep -o 'unit [0-9]*, .*weights digest [0-9a-fx]*' "$1" | sed 's/:.*digest/ digest/' | sort
}

work=$(mktemp -d)
trap 'kill "${attacker:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Unit 1 and above start a second late (F2D2N_RANK is set by the launcher).
late_start=('/bin/sh' '-c' 'if [ "$F2D2N_RANK" != 0 ]; then sleep 1; fi; exec "$0" "$1"' "$worker" "$plan")
timeout 180 "$launch" -n "$units" --base-port "$base" --timeout 150 -- "${late_start[@]}" >"$work/quiet" 2>&1 ||
  { cat "$work/quiet"; echo "attack.sh: the undisturbed run failed"; exit 1; }

python3 - "$base" "$units" "$work/stop" >"$work/attacker" 2>&1 <<'EOF' &
import os, random, socket, sys, time
base, units, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(7)
held, slow, tries = [], [], 0
def connect(port):
    s = socket.socket(); s.settimeout(0.2)
    try: s.connect(("127.0.0.1", port)); return s
    except OSError: s.close(); return None
deadline = time.time() + 170
while not os.path.exists(stop) and time.time() < deadline:
    port = base + rng.randrange(units)
    s = connect(port)
    if s is None: time.sleep(0.005); continue
    tries += 1
    kind = tries % 5
    try:
        if kind == 0: s.sendall(os.urandom(rng.randrange(1, 4096)))
        elif kind == 1: s.sendall(b"F2D2N-A1" + os.urandom(32) + os.urandom(44))  # a challenge, then a forged proof
        elif kind == 2: s.sendall(b"f2d2" + os.urandom(60))  # frame-like bytes instead of a challenge
        elif kind == 3: slow.append(s); s = None
        elif kind == 4 and len(held) < 30: held.append(s); s = None
    except OSError: pass
    if s is not None: s.close()
    for t in list(slow):  # one byte at a time
        try: t.send(b"F")
        except OSError: slow.remove(t); t.close()
    time.sleep(0.002)
print(f"attacker: {tries} connections, {len(held)} held idle, {len(slow)} slow")
sys.exit(0 if tries >= 10 else 3)  # an attack that never reached a unit proves nothing
EOF
attacker=$!
sleep 0.5
status=0
timeout 180 "$launch" -n "$units" --base-port "$base" --timeout 150 -- "${late_start[@]}" >"$work/attacked" 2>&1 ||
  status=$?
touch "$work/stop"
attacker_status=0
wait "$attacker" || attacker_status=$?
cat "$work/attacker"
[[ $attacker_status -eq 0 ]] || { echo "attack.sh: the attacker reached no unit ($attacker_status)"; exit 1; }
if [[ $status -ne 0 ]]; then cat "$work/attacked"; echo "attack.sh: the attacked run failed ($status)"; exit 1; fi
quiet=$(digests "$work/quiet")
attacked=$(digests "$work/attacked")
echo "undisturbed: $quiet"
echo "attacked:    $attacked"
[[ -n "$quiet" && "$quiet" == "$attacked" ]] || { echo "attack.sh: the weights differ"; exit 1; }
echo "attack.sh: $plan under attack ends with the undisturbed run's weights on every unit"
