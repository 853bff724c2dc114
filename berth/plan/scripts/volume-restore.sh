set -eu
staging=/target/.berth-restore
case $1 in
  stage)
    rm -rf "$staging"; mkdir "$staging"
    # restic dump names entries volumes/<name>/...: strip those two levels.
    tar -x -C "$staging" --strip-components=2 --numeric-owner -f - ;;
  swap)
    find /target -mindepth 1 -maxdepth 1 ! -name .berth-restore -exec rm -rf {} +
    find "$staging" -mindepth 1 -maxdepth 1 -exec mv {} /target/ \;
    rmdir "$staging" ;;
  discard) rm -rf "$staging" ;;
esac
