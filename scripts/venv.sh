# Sourced by scripts/run and scripts/test: make .venv and install a requirements file into it, only when it changed.
# Usage: ensure_venv requirements.txt
ensure_venv() {
  local requirements="$1" stamp
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
      # Debian ships venv separately; install it when we can, else say exactly what is missing.
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
      else
        echo "parley: python3 -m venv failed; install it first: sudo apt-get install python3-venv" >&2
        exit 1
      fi
    fi
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  stamp=".venv/.installed-$(basename "$requirements")"
  if [ ! -f "$stamp" ] || ! cmp -s <(cat requirements*.txt) "$stamp"; then
    .venv/bin/python -m pip install -q -r "$requirements"
    cat requirements*.txt > "$stamp"
  fi
}
