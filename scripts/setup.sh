#!/usr/bin/env bash
# groundpo setup: system packages, a virtual environment at .venv, groundpo (editable) with its dev extra.
# Safe to run again: on a prepared machine it checks, finds nothing to do, and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages: FFmpeg's shared libraries (torchaudio >= 2.9 decodes audio through torchcodec);
#    Chromium, the browser tests/test_webui_browser.py drives through Playwright (never `playwright install`).
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. The virtual environment (Python 3.11).
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "groundpo needs Python 3.11, found " + sys.version' 
  echo "[setup] creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

# 3. groundpo and its pinned dependencies; skipped when setup.py has not changed since the last install.
stamp=.venv/.groundpo-installed
want="$(cat setup.py pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import groundpo, llamafactory" >/dev/null 2>&1; then
  echo "[setup] installing groundpo (editable) with the dev extra into .venv"
  .venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
else
  echo "[setup] .venv is up to date"
fi
echo "[setup] done. Run the tests with: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -n 2"
