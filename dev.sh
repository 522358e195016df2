#!/usr/bin/env bash
# The two commands of the README, on a fresh Debian/Ubuntu machine with Python 3.11+ (root or sudo):
#   ./dev.sh run    install everything, then run the pipeline on the sample shards (local Ray)
#   ./dev.sh test   install everything, then run the test suite (pytest's "no tests" exit 5 fails)
# Installs into ./.venv; re-runs skip the install while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
VENV=.venv

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

system_packages() {
  # Tesseract and its English data, for OCR of scanned PDF pages (pytesseract calls the binary); for the
  # tests also chromium and its driver, in which the report.html test renders the page.
  local want=()
  command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx eng ||
    want+=(tesseract-ocr tesseract-ocr-eng)
  if [ "${1:-}" = test ]; then
    command -v chromium >/dev/null || want+=(chromium)
    command -v chromedriver >/dev/null || want+=(chromium-driver)
  fi
  [ ${#want[@]} = 0 ] && return 0
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${want[@]}"
}

install() {
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"Python 3.11+ needed, found {sys.version}"'
  system_packages "${1:-}"
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian/Ubuntu ship venv's ensurepip separately.
    as_root apt-get update -qq
    as_root apt-get install -y -qq "python3-venv" "python$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv" || true
    rm -rf "$VENV"; "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and pinned: 2.13.0 is a CPU wheel on the build machines; an unpinned torch pulls a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[all,dev]"
  touch "$stamp"
}

case "${1:-}" in
  run)
    install
    shift
    exec "$VENV/bin/ray-jobs" run "$@"
    ;;
  test)
    install test
    shift
    rc=0
    "$VENV/bin/python" -m pytest "$@" || rc=$?
    if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing the run" >&2; exit 1; fi
    exit "$rc"
    ;;
  *)
    echo "usage: ./dev.sh run [ray-jobs run options] | ./dev.sh test [pytest options]" >&2
    exit 2
    ;;
esac
