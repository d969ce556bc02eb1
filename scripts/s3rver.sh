#!/usr/bin/env bash
# Installs and runs s3rver, the fake S3 server (Node.js) that the S3 client's tests talk to. It is
# installed from the npm registry into a folder of the build directory, never globally.
#   scripts/s3rver.sh install [DIR]          install s3rver into DIR (default ${F2D2N_BUILD_DIR:-build}/s3rver)
#                                            unless already there at the pinned version; prints the
#                                            path of its entry point (the .js file node runs) as the last line
#   scripts/s3rver.sh run DATA PORT [BUCKET] run it in the foreground on 127.0.0.1:PORT, storing under DATA,
#                                            with BUCKET (default f2d2n) created at start; installs first
#                                            (into ${F2D2N_S3RVER_DIR:-${F2D2N_BUILD_DIR:-build}/s3rver}).
#                                            No request log; stdout gets only "S3rver listening on 127.0.0.1:PORT"
#                                            (after an empty line), which tells the port chosen for PORT 0.
#                                            The node process replaces this script (same pid): kill it to stop.
#   scripts/s3rver.sh start DATA [BUCKET]    run it in the background on a free loopback port; returns once it
#                                            accepts connections, printing "PID PORT" (kill PID to stop it)
# Needs node (>= 8.3; 20 here) and npm. s3rver accepts the access key S3RVER only, and does not
# check SigV4 signatures or payload hashes (it does check the key, the header's form and the date).
set -euo pipefail

version=3.7.1   # the last release; 3.x runs on Node 20

die() { echo "s3rver.sh: $*" >&2; exit 1; }
usage() { echo "usage: scripts/s3rver.sh $*" >&2; exit 2; }

# install DIR: installs if needed, then prints the entry point's absolute path.
install() {
  local dir=$1
  local entry="$dir/node_modules/s3rver/bin/s3rver.js"
  local have=""
  mkdir -p "$dir"
  # Tests that start servers in parallel may all install at once: one installs, the others wait.
  exec 9>"$dir/.install.lock"
  flock 9
  if [[ -f "$dir/node_modules/s3rver/package.json" ]]; then
    have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/s3rver/package.json" | head -n 1)
  fi
  if [[ "$have" != "$version" || ! -f "$entry" ]]; then
    command -v npm >/dev/null || die "npm is not installed (apt-get install npm, or Node.js from nodejs.org)"
    echo "s3rver.sh: installing s3rver@$version into $dir" >&2
    npm install --prefix "$dir" --no-audit --no-fund --silent --save-exact "s3rver@$version" >&2 \
      || die "npm install s3rver@$version failed"
    [[ -f "$entry" ]] || die "npm installed no $entry"
  fi
  flock -u 9
  (cd "$(dirname "$entry")" && echo "$PWD/$(basename "$entry")")
}

command -v node >/dev/null || die "node is not installed (Node.js 20: apt-get install nodejs npm)"

case "${1:-}" in
  install)
    [[ $# -le 2 ]] || usage "install [DIR]"
    install "${2:-${F2D2N_BUILD_DIR:-build}/s3rver}"
    ;;
  run)
    [[ $# -ge 3 && $# -le 4 ]] || usage "run DATA PORT [BUCKET]"
    data=$2 port=$3 bucket=${4:-f2d2n}
    [[ "$port" =~ ^[0-9]+$ ]] || usage "run DATA PORT [BUCKET]   (PORT a number, not '$port')"
    entry=$(install "${F2D2N_S3RVER_DIR:-${F2D2N_BUILD_DIR:-build}/s3rver}" | tail -n 1)
    mkdir -p "$data"
    # --openssl-legacy-provider: ListObjectsV2 makes its continuation tokens with DES, which OpenSSL 3
    # (Node 17+) has only in its legacy provider; without it a truncated listing answers 500 InternalError.
    exec node --openssl-legacy-provider "$entry" --directory "$data" --address 127.0.0.1 --port "$port" --silent \
      --configure-bucket "$bucket"
    ;;
  start)
    # In the background on a free loopback port, once it accepts connections; prints "PID PORT".
    [[ $# -ge 2 && $# -le 3 ]] || usage "start DATA [BUCKET]"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$0" run "$2" "$port" "${3:-f2d2n}" >/dev/null &
    pid=$!
    for _ in $(seq 200); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$pid $port"; exit 0; }
      kill -0 "$pid" 2>/dev/null || die "s3rver exited at start"
      sleep 0.1
    done
    kill "$pid" 2>/dev/null
    die "s3rver did not accept connections on port $port within 20 s"
    ;;
  *)
    usage "install [DIR] | run DATA PORT [BUCKET] | start DATA [BUCKET]"
    ;;
esac
