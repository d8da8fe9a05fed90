#!/usr/bin/env bash
# Runs the in-scope part of ceph/s3-tests against an edgemirror binary.
#
#   tests/s3-tests/run.sh [--extra | --all] S3TESTS_DIR EDGEMIRROR_BIN [PYTEST_ARGS...]
#
# S3TESTS_DIR     a checkout of https://github.com/ceph/s3-tests (not fetched here)
# EDGEMIRROR_BIN  the node binary (e.g. target/release/edgemirror)
# --extra         run selection-extra.txt instead of selection.txt (informational tests
#                 next to the scope: GetObjectAttributes, anonymous/expired-signature checks)
# --all           run both lists
# PYTEST_ARGS     anything after the two paths goes to pytest (e.g. -x, -k multipart, -v)
#
# It writes the node config and s3tests.conf into a fresh temp dir (S3T_WORKDIR to choose
# it), starts the node on free ports (store under that dir), runs pytest with the
# edgemirror_plugin next to this script, stops the node, and leaves in the work dir:
#   pytest.log  junit.xml  exchanges.jsonl (the HTTP exchanges of every failed test)
#   node.stderr node.stdout edgemirror.toml s3tests.conf
# `python3 tests/s3-tests/show_failures.py WORKDIR/exchanges.jsonl` prints each failure
# with the requests that led to it. Exit status: pytest's.
#
# Python deps: pip install boto3 munch gevent isodate pytz httplib2 lxml requests pyyaml \
#              pytest pytest-timeout
# Without botocore[crt] (the suite's requirements.txt does not list it), the CRC32C checksum
# test can only fail on the client once it gets past CreateMultipartUpload. With it installed,
# botocore signs through awscrt, which refuses to presign with expiry <= 0, so three
# presigned-expiry tests of the --extra list then fail on the client instead.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lists=("$here/selection.txt")
case "${1:-}" in
  --extra) lists=("$here/selection-extra.txt"); shift ;;
  --all) lists=("$here/selection.txt" "$here/selection-extra.txt"); shift ;;
esac
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
s3tests_dir="$(cd "$1" && pwd)"
bin="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
shift 2
[ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }

python="${PYTHON:-python3}"
if ! "$python" -c 'import boto3, munch, pytest, pytest_timeout, isodate, lxml' 2>/dev/null; then
  echo "missing python deps; see the header of $0 (pip install ...)" >&2
  exit 2
fi

# The suite moved from s3tests_boto3/functional to s3tests/functional; the lists use the latter.
if [ -f "$s3tests_dir/s3tests/functional/test_s3.py" ]; then
  pkg=s3tests
elif [ -f "$s3tests_dir/s3tests_boto3/functional/test_s3.py" ]; then
  pkg=s3tests_boto3
else
  echo "no s3tests/functional/test_s3.py under $s3tests_dir" >&2
  exit 2
fi

work="${S3T_WORKDIR:-$(mktemp -d /tmp/edgemirror-s3tests.XXXXXX)}"
mkdir -p "$work/store"
rm -f "$work/exchanges.jsonl"

# Keys: the sample s3tests.conf's users (main, alt, tenant, iam, iam root, iam alt root).
keys=(
  "0555b35654ad1656d804 h7GhxuBLTrlhVUyxSPUKUV8r/2EI4ngqJxD7iBdBYLhwluN30JaT3Q=="
  "NOPQRSTUVWXYZABCDEFG nopqrstuvwxyzabcdefghijklmnabcdefghijklm"
  "HIJKLMNOPQRSTUVWXYZA opqrstuvwxyzabcdefghijklmnopqrstuvwxyzab"
  "ABCDEFGHIJKLMNOPQRST abcdefghijklmnopqrstuvwxyzabcdefghijklmn"
  "AAAAAAAAAAAAAAAAAAaa aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  "BBBBBBBBBBBBBBBBBBbb bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

{
  cat <<EOF
[server]
listen = "127.0.0.1:0"
workers = 2
body_timeout_ms = 60000

[admin]
listen = "127.0.0.1:0"
token = "s3tests-admin"

[store]
dir = "$work/store"
max_bytes = 0                  # no cap but the disk's
min_free_bytes = 0
max_object_bytes = 68719476736

[cache]
memory_bytes = 268435456
disk_bytes = 0                 # no foyer disk tier: nothing to preallocate

[s3]
region = "us-east-1"
EOF
  for k in "${keys[@]}"; do
    read -r ak sk <<<"$k"
    printf '\n[[s3.keys]]\naccess_key = "%s"\nsecret_key = "%s"\n' "$ak" "$sk"
  done
} > "$work/edgemirror.toml"

"$bin" --check --config "$work/edgemirror.toml" >/dev/null

node_pid=""
stop_node() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill "$node_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$node_pid" 2>/dev/null || true
  fi
}
trap stop_node EXIT INT TERM

"$bin" --config "$work/edgemirror.toml" >"$work/node.stdout" 2>"$work/node.stderr" &
node_pid=$!
port=""
for _ in $(seq 200); do
  port="$(sed -n 's/^edgemirror ready data=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/node.stdout")"
  [ -n "$port" ] && break
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "the node did not get ready; its stderr:" >&2
  cat "$work/node.stderr" >&2
  exit 1
fi

# api_name is left empty: the node's region is us-east-1, where AWS takes no
# LocationConstraint and GetBucketLocation answers an empty one (test_bucket_get_location
# then skips). The sample's "default" is an RGW zonegroup name.
cat > "$work/s3tests.conf" <<EOF
[DEFAULT]
host = 127.0.0.1
port = $port
is_secure = False
ssl_verify = False

[fixtures]
bucket prefix = s3t-{random}-
iam name prefix = s3-tests-
iam path prefix = /s3-tests/

[s3 main]
display_name = M. Tester
user_id = testid
email = tester@ceph.com
api_name =
access_key = 0555b35654ad1656d804
secret_key = h7GhxuBLTrlhVUyxSPUKUV8r/2EI4ngqJxD7iBdBYLhwluN30JaT3Q==

[s3 alt]
display_name = john.doe
email = john.doe@example.com
user_id = 56789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234
access_key = NOPQRSTUVWXYZABCDEFG
secret_key = nopqrstuvwxyzabcdefghijklmnabcdefghijklm

[s3 tenant]
display_name = testx\$tenanteduser
user_id = testx\$9876543210abcdef0123456789abcdef0123456789abcdef0123456789abcdef
access_key = HIJKLMNOPQRSTUVWXYZA
secret_key = opqrstuvwxyzabcdefghijklmnopqrstuvwxyzab
email = tenanteduser@example.com
tenant = testx

[iam]
email = s3@example.com
user_id = 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
access_key = ABCDEFGHIJKLMNOPQRST
secret_key = abcdefghijklmnopqrstuvwxyzabcdefghijklmn
display_name = youruseridhere

[iam root]
access_key = AAAAAAAAAAAAAAAAAAaa
secret_key = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
user_id = RGW11111111111111111
email = account1@ceph.com

[iam alt root]
access_key = BBBBBBBBBBBBBBBBBBbb
secret_key = bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
user_id = RGW22222222222222222
email = account2@ceph.com
EOF

# The node ids, minus those this checkout does not have (renamed or removed upstream).
ids=()
missing=0
while read -r id; do
  file="${id%%::*}"; name="${id##*::}"
  file="${file/#s3tests\//$pkg/}"
  if grep -q "^def ${name}(" "$s3tests_dir/$file" 2>/dev/null; then
    ids+=("$file::$name")
  else
    echo "not in this checkout, skipped: $id" >&2
    missing=$((missing + 1))
  fi
done < <(cat "${lists[@]}" | sed -e 's/#.*//' -e 's/[[:space:]]*$//' | grep -v '^$')
echo "running ${#ids[@]} tests ($missing listed tests missing) against 127.0.0.1:$port; work dir $work"

set +e
(
  cd "$s3tests_dir"
  S3TEST_CONF="$work/s3tests.conf" \
  EDGEMIRROR_S3T_EXCHANGES="$work/exchanges.jsonl" \
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
  "$python" -m pytest -p edgemirror_plugin -p no:cacheprovider \
    --timeout "${S3T_TIMEOUT:-60}" -q -rfEs --tb=short \
    -o junit_family=xunit2 --junitxml "$work/junit.xml" \
    "$@" "${ids[@]}"
) 2>&1 | tee "$work/pytest.log"
status=${PIPESTATUS[0]}
set -e

stop_node
trap - EXIT INT TERM
echo "work dir: $work (pytest.log, junit.xml, exchanges.jsonl, node.stderr)"
exit "$status"
