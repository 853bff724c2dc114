set -eu
cd /data
staged=.berth-restore.rdb
case $1 in
  stage) cat >"$staged"; [ -s "$staged" ] || { echo "empty RDB" >&2; rm -f "$staged"; exit 1; } ;;
  discard) rm -f "$staged" ;;
  swap)
    rm -rf appendonlydir appendonly.aof temp-*.rdb dump.rdb
    mv "$staged" dump.rdb
    if [ "$2" = aof ]; then
      redis-server --dir /data --port 0 --unixsocket /tmp/restore.sock --appendonly no --save '' &
      until redis-cli -s /tmp/restore.sock ping 2>/dev/null | grep -q PONG; do sleep 0.2; done
      redis-cli -s /tmp/restore.sock config set appendonly yes >/dev/null
      until redis-cli -s /tmp/restore.sock info persistence | tr -d '\r' | grep -q '^aof_rewrite_in_progress:0$' \
         && redis-cli -s /tmp/restore.sock info persistence | tr -d '\r' | grep -q '^aof_rewrite_scheduled:0$' \
         && [ -d appendonlydir ]; do sleep 0.2; done
      redis-cli -s /tmp/restore.sock shutdown >/dev/null 2>&1 || true
      wait
    fi ;;
esac
