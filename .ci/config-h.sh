# Sourced by .ci/fuzz.sh and .ci/static.sh, which build lib/*.c without
# make: sets cfg to a directory holding config.h as configure writes it on
# this machine (the tree's own when it is configured in place, else one
# made under $work), and msgpack to the pkg-config name found.
if [ -f config.h ]; then
  cfg=$top
elif [ -x configure ]; then
  mkdir -p "$work/cfg"
  (cd "$work/cfg" && "$top/configure" -q --no-create >/dev/null &&
   ./config.status -q config.h)
  cfg=$work/cfg
else
  echo "$(basename "$0"): no configure script: run autoreconf -fi first" >&2
  exit 1
fi
msgpack=$(pkg-config --exists msgpack && echo msgpack || echo msgpack-c)
