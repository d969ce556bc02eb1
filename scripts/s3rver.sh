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
  *)
    usage "install [DIR] | run DATA PORT [BUCKET]"
    ;;
esac
