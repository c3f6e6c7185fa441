#!/usr/bin/env bash
# The project's test command (README, `make test`, and CI all call this).
# Installs the browser and fonts the book check needs, then runs pytest.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
   || ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing chromium, chromium-driver and fonts-noto-cjk for the browser check"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk >/dev/null) \
      || echo "[test] could not install chromium; the browser check will be skipped"
  else
    echo "[test] chromium, chromedriver or fonts-noto-cjk missing and not root: the browser check will be skipped"
  fi
fi

"$PY" -m pytest --durations=15 "$@"  # the slowest tests, for the next speed-up
status=$?
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ $status -eq 5 ]; then
  echo "[test] pytest collected no tests" >&2
  exit 1
fi
exit $status
