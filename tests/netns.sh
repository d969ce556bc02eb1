#!/usr/bin/env bash
# Units on different addresses: each unit runs in a network namespace of its own, which this script
# makes and removes itself. Unit k's namespace f2d2n-netns-<pid>-u<k> has 10.213.0.<k+1>/24 on its
# eth0, the end of a veth pair whose other end (p<k>) is a port of a bridge in the namespace
# f2d2n-netns-<pid>-sw. Nothing is added to the host's own network namespace, so runs in parallel
# (their names hold this script's pid) cannot clash. The units are started without f2d2n_launch
# (which starts units on one address): `ip netns exec <ns> env F2D2N_RANK=k ... <worker>`, each
# under timeout(1), with a fresh F2D2N_CLUSTER_KEY (without one a unit refuses any address but
# loopback).
#
#   tests/netns.sh <case> <plan_worker> <comm_worker>     ctest runs it (tests/CMakeLists.txt, label netns)
#
# Cases:
#   plans   plan_worker dp2 (2 units) and dp2_tp2 (4 units): each unit's 20 steps equal the serial
#           trainer's; then again with every link shaped by tc tbf on both ends (200 Mbit/s, unit
#           1's link 20 Mbit/s): the check passes again, each unit's weights digest is bit for bit
#           the one of the unshaped run, and every shaper counted the run's bytes
#   cut     3 units all-reduce without pause (comm_worker soak) with F2D2N_TIMEOUT=3; unit 1's link
#           goes down for good: every unit ends with a typed comm_error (exit 3) within 15 s of
#           the cut (deadline, linger, slack for a busy machine), none hangs
#   heal    the same with F2D2N_TIMEOUT=15, but the link is down for 1.5 s only: the run completes
#           on every unit with every sum right, and each unit's longest all-reduce spans the cut
#           (at least 1 s: the cut happened under the run)
#   no_key  2 units without F2D2N_CLUSTER_KEY: unit 0 refuses to listen on, unit 1 to connect to
#           10.213.0.1, each with the configuration_error that names F2D2N_CLUSTER_KEY
#
# Needs root, iproute2's ip (with netns) and tc, timeout(1), and a kernel that lets it make a
# namespace, a bridge, veth pairs and (plans) a tbf qdisc; otherwise it prints "skipped: ..." and
# exits 77, which ctest counts as skipped (SKIP_RETURN_CODE). Namespaces left by a run that was
# killed are removed by the next run once their run's pid is gone.
set -euo pipefail

skip_code=77
prefix=f2d2n-netns
case_name=${1:-}
plan_worker=${2:-}
comm_worker=${3:-}
if [[ ! $case_name =~ ^(plans|cut|heal|no_key)$ || ! -x $plan_worker || ! -x $comm_worker ]]; then
  echo "usage: netns.sh plans|cut|heal|no_key <plan_worker> <comm_worker>" >&2
  exit 2
fi

skip() {
  echo "skipped: $*"
  exit "$skip_code"
}
fail() {
  echo "netns $case_name: FAILED: $*"
  exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- can this machine do it at all? -----------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin  # ip and tc live there; a root shell's PATH may lack them
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root (this runs as uid $(id -u))"
for tool in ip tc timeout; do
  command -v "$tool" >/dev/null || skip "no '$tool' on PATH (Debian: iproute2 for ip and tc, coreutils for timeout)"
done
ip netns list >/dev/null 2>&1 || skip "this 'ip' has no 'netns' (iproute2 too old?)"

# --- what this run makes, and its removal whatever happens --------------------------------------------
run=$$
sw=$prefix-$run-sw
unit_ns() { echo "$prefix-$run-u$1"; }
made=()  # namespaces made by this run
pids=()  # units running now (timeout(1) processes: a TERM reaches the unit too)
work=$(mktemp -d "${TMPDIR:-/tmp}/$prefix-$run.XXXXXX")
cleanup() {
  local p n
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${made[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "netns $case_name: interrupted"; exit 130' INT
trap 'echo "netns $case_name: terminated"; exit 143' TERM

# Namespaces of earlier runs whose script is gone (killed by ctest's timeout, say): their units
# first (timeout(1) ends them anyway), then the namespaces. Those of live runs are left alone; any
# with this run's pid are an earlier run's (this one has made none yet).
while read -r n _; do
  [[ $n =~ ^$prefix-([0-9]+)-(sw|u[0-9]+)$ ]] || continue
  owner=${BASH_REMATCH[1]}
  if [[ $owner != "$run" ]] && kill -0 "$owner" 2>/dev/null; then continue; fi
  for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$n" 2>/dev/null && echo "removed $n, left by run $owner, which is gone"
done < <(ip netns list 2>/dev/null)
for d in "${TMPDIR:-/tmp}/$prefix-"*; do  # and their logs
  [[ -d $d && $d =~ /$prefix-([0-9]+)\.[A-Za-z0-9]+$ ]] || continue
  owner=${BASH_REMATCH[1]}
  if [[ $d == "$work" ]] || { [[ $owner != "$run" ]] && kill -0 "$owner" 2>/dev/null; }; then continue; fi
  rm -rf "$d"
done

# --- the network ----------------------------------------------------------------------------------------
address() { echo "10.213.0.$(($1 + 1))"; }
peers() {  # the F2D2N_PEERS of n units
  local k list=()
  for ((k = 0; k < $1; ++k)); do list+=("$(address "$k"):29500"); done
  (IFS=,; echo "${list[*]}")
}

# Makes the bridge's namespace and n units' namespaces, each unit linked to the bridge.
make_network() {
  local n=$1 k u err
  err=$(ip netns add "$sw" 2>&1) || skip "cannot make a network namespace: $err"
  made+=("$sw")
  err=$(ip -n "$sw" link add br0 type bridge 2>&1) || skip "cannot make a bridge in a namespace: $err"
  ip -n "$sw" link set br0 up
  for ((k = 0; k < n; ++k)); do
    u=$(unit_ns "$k")
    ip netns add "$u"
    made+=("$u")
    err=$(ip -n "$sw" link add "p$k" type veth peer name eth0 netns "$u" 2>&1) || skip "cannot make a veth pair: $err"
    ip -n "$sw" link set "p$k" master br0
    ip -n "$sw" link set "p$k" up
    ip -n "$u" link set lo up
    ip -n "$u" addr add "$(address "$k")/24" dev eth0
    ip -n "$u" link set eth0 up
  done
  echo "network: $n namespaces ($(unit_ns 0) ..), addresses $(address 0) .. $(address $((n - 1))) on a bridge in $sw"
}

# --- units -------------------------------------------------------------------------------------------------
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')  # this run's cluster key (never printed)
declare -a rcs ended

# start_units N LIMIT KEY|- ENV... -- COMMAND...: unit k of N in its namespace under timeout LIMIT,
# its output in $work/unit<k>.log; KEY '-' starts them without a cluster key.
start_units() {
  local n=$1 limit=$2 with_key=$3 k
  shift 3
  local vars=()
  while [[ $1 != -- ]]; do vars+=("$1"); shift; done
  shift
  [[ $with_key == - ]] || vars+=("F2D2N_CLUSTER_KEY=$key")
  pids=() rcs=() ended=()
  for ((k = 0; k < n; ++k)); do
    timeout -k 5 "$limit" ip netns exec "$(unit_ns "$k")" \
      env -u F2D2N_CLUSTER_KEY -u F2D2N_CLUSTER_KEY_FILE F2D2N_RANK="$k" F2D2N_WORLD_SIZE="$n" \
      F2D2N_PEERS="$(peers "$n")" "${vars[@]}" "$@" >"$work/unit$k.log" 2>&1 &
    pids+=($!)
  done
}

# Waits for every unit; rcs[k] is its exit code (124: timeout(1) ended it), ended[k] when it ended (ms).
wait_units() {
  local left=("${pids[@]}") done_pid rc k
  while ((${#left[@]} > 0)); do
    rc=0
    wait -n -p done_pid "${left[@]}" || rc=$?
    for k in "${!pids[@]}"; do
      if [[ ${pids[k]} == "$done_pid" ]]; then
        rcs[k]=$rc
        ended[k]=$(now_ms)
      fi
    done
    local rest=()
    for p in "${left[@]}"; do [[ $p == "$done_pid" ]] || rest+=("$p"); done
    left=("${rest[@]}")
  done
  pids=()
}

show_units() {
  local k
  for k in "${!rcs[@]}"; do sed "s/^/  [$k] /" "$work/unit$k.log"; done
}

# Waits until every unit of N printed PATTERN (within LIMIT seconds).
wait_for_all() {
  local n=$1 pattern=$2 limit=$3 k start
  start=$(now_ms)
  for ((k = 0; k < n; ++k)); do
    until grep -q "$pattern" "$work/unit$k.log" 2>/dev/null; do
      (($(now_ms) - start < limit * 1000)) || { show_units; fail "unit $k did not print '$pattern' within $limit s"; }
      sleep 0.05
    done
  done
}

# --- the cases ------------------------------------------------------------------------------------------
# plan_worker PLAN on N units; every unit must pass; DIGESTS gets "rank:digest ..." of the run.
run_plan() {
  local plan=$1 n=$2 k line start
  start=$(now_ms)
  start_units "$n" 120 key F2D2N_TIMEOUT=30 -- "$plan_worker" "$plan"
  wait_units
  show_units
  digests=()
  for ((k = 0; k < n; ++k)); do
    [[ ${rcs[k]} -eq 0 ]] || fail "$plan: unit $k exited with ${rcs[k]}"
    line=$(grep "20 steps equal the serial weights" "$work/unit$k.log") || fail "$plan: unit $k did not report its check"
    digests+=("${line##*weights digest }")
  done
  echo "$plan on $n namespaces: every unit equals serial training ($(($(now_ms) - start)) ms)"
}

# tbf on both ends of every unit's link: RATE, unit 1's SLOW.
shape_links() {
  local n=$1 rate=$2 slow=$3 k r
  for ((k = 0; k < n; ++k)); do
    r=$rate
    ((k == 1)) && r=$slow
    tc -n "$(unit_ns "$k")" qdisc add dev eth0 root tbf rate "$r" burst 64kb latency 50ms
    tc -n "$sw" qdisc add dev "p$k" root tbf rate "$r" burst 64kb latency 50ms
  done
}

# The bytes each tbf sent; fails when one sent nothing (the run's traffic did not pass it).
check_shapers() {
  local n=$1 k sent_u sent_sw
  for ((k = 0; k < n; ++k)); do
    sent_u=$(tc -s -n "$(unit_ns "$k")" qdisc show dev eth0 | awk '/^qdisc tbf/ {f = 1} f && /Sent/ {print $2; exit}')
    sent_sw=$(tc -s -n "$sw" qdisc show dev "p$k" | awk '/^qdisc tbf/ {f = 1} f && /Sent/ {print $2; exit}')
    echo "  link of unit $k: its tbf sent ${sent_u:-0} bytes, the bridge's ${sent_sw:-0}"
    ((${sent_u:-0} > 0 && ${sent_sw:-0} > 0)) || fail "a shaper of unit $k's link sent nothing"
  done
}

case_plans() {
  make_network 4
  # The shaper must exist before the runs depend on it.
  local err
  err=$(tc -n "$sw" qdisc add dev br0 root tbf rate 200mbit burst 64kb latency 50ms 2>&1) ||
    skip "this kernel has no tbf qdisc: $err"
  tc -n "$sw" qdisc del dev br0 root
  declare -A plain
  local plan n k
  for plan in dp2:2 dp2_tp2:4; do
    n=${plan#*:}
    plan=${plan%:*}
    echo "== $plan, $n units, plain links"
    run_plan "$plan" "$n"
    plain[$plan]="${digests[*]}"
  done
  shape_links 4 200mbit 20mbit
  echo "== every link shaped: tbf 200 Mbit/s on both ends, unit 1's 20 Mbit/s"
  for plan in dp2:2 dp2_tp2:4; do
    n=${plan#*:}
    plan=${plan%:*}
    echo "== $plan, $n units, shaped links"
    run_plan "$plan" "$n"
    [[ "${digests[*]}" == "${plain[$plan]}" ]] ||
      fail "$plan: weights digests differ: shaped ${digests[*]}, plain ${plain[$plan]}"
    echo "$plan: every unit's weights digest is the plain run's: ${digests[*]}"
  done
  check_shapers 4
}

# comm_worker soak on 3 units, each wait's deadline TIMEOUT_S, each unit under timeout(1) LIMIT;
# once all run, unit 1's link (its bridge port) goes down for DOWN seconds, or for good when DOWN
# is empty. A healed run is stopped 1 s after the heal (a stop file unit 0 looks for), so the cut
# falls inside the run however slowly this script gets there. Sets cut_at, cut_done (ms).
soak_cut() {
  local timeout_s=$1 limit=$2 down=${3:-}
  make_network 3
  start_units 3 "$limit" key F2D2N_TIMEOUT="$timeout_s" -- "$comm_worker" soak "$limit" "$work/stop"
  wait_for_all 3 soaking 30
  sleep 0.5
  cut_at=$(now_ms)
  ip -n "$sw" link set p1 down
  cut_done=$(now_ms)
  if [[ -n $down ]]; then
    local healing
    sleep "$down"
    healing=$(now_ms)
    ip -n "$sw" link set p1 up
    echo "unit 1's link was down $((healing - cut_done)) ms (from the end of 'ip link set down' to the start" \
      "of 'up'; $(($(now_ms) - cut_at)) ms from the start of one to the end of the other), now up again"
    sleep 1
    touch "$work/stop"
  else
    echo "unit 1's link is down (for good; 'ip link set down' took $((cut_done - cut_at)) ms)"
  fi
  wait_units
  show_units
}

# A unit's deadline (3 s), plus shutdown's linger (2 s) while frames to unit 1 are queued, plus
# slack for a loaded machine (CI runs other tests beside these); a unit that waited without a
# deadline would reach timeout(1)'s 60 s.
cut_bound_ms=15000

case_cut() {
  soak_cut 3 60
  local k after
  for k in 0 1 2; do
    after=$((ended[k] - cut_done))
    case ${rcs[k]} in
      3) grep -q "soak: ended by a [a-z_]*_error after" "$work/unit$k.log" || fail "unit $k: exit 3 without its error" ;;
      124 | 137) fail "unit $k hung: timeout(1) ended it ${after} ms after the cut" ;;
      *) fail "unit $k exited with ${rcs[k]}, not a comm_error's 3" ;;
    esac
    echo "unit $k: $(grep -o 'ended by a [a-z_]*' "$work/unit$k.log"), ${after} ms after the cut"
    ((after <= cut_bound_ms)) || fail "unit $k ended ${after} ms after the cut (F2D2N_TIMEOUT=3: at most $cut_bound_ms ms)"
  done
  echo "cut: every unit ended with a typed error within $cut_bound_ms ms of the cut"
}

case_heal() {
  soak_cut 15 60 1.5
  local k longest
  for k in 0 1 2; do
    [[ ${rcs[k]} -eq 0 ]] || fail "unit $k exited with ${rcs[k]} after a cut of 1.5 s"
    longest=$(sed -n 's/.*every sum right; the longest took \([0-9]*\) ms.*/\1/p' "$work/unit$k.log")
    [[ -n $longest ]] || fail "unit $k did not report its run"
    ((longest >= 1000)) || fail "unit $k's longest all-reduce took $longest ms: the cut did not stall it"
    echo "unit $k: completed, every sum right; its longest all-reduce ${longest} ms (across the cut)"
  done
  echo "heal: a cut of 1.5 s stalled the run and it completed correctly"
}

case_no_key() {
  make_network 2
  local start k
  start=$(now_ms)
  start_units 2 30 - F2D2N_CONNECT_TIMEOUT=10 -- "$comm_worker" adjoint
  wait_units
  show_units
  local doing=("listen on" "connect to")
  for k in 0 1; do
    [[ ${rcs[k]} -eq 1 ]] || fail "unit $k exited with ${rcs[k]} without a key"
    grep -q "unit $k has no cluster key and will not ${doing[k]} $(address 0), which is not a loopback address: set F2D2N_CLUSTER_KEY" \
      "$work/unit$k.log" || fail "unit $k did not name the missing key"
  done
  echo "no_key: both units refused $(address 0) without a key, in $(($(now_ms) - start)) ms"
}

begun=$(now_ms)
"case_$case_name"
echo "netns $case_name: passed in $(($(now_ms) - begun)) ms"
