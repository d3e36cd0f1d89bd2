#!/bin/sh
# Headless Chromium for the Web UI browser test (tests/starter/test_web_ui.py).
# Idempotent: nothing happens when /usr/bin/chromium exists. Uses Debian's packages
# (chromium, chromium-driver), never `playwright install`. When it cannot install (no apt-get,
# not root and no sudo, no network) it says so and exits 0: the browser test then skips with a reason.
set -u
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here; the Web UI browser test will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-chromium: not root and no passwordless sudo; the Web UI browser test will be skipped" >&2
    exit 0
fi
echo "install-chromium: installing chromium and chromium-driver from Debian packages" >&2
if $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; then
    echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)" >&2
else
    echo "install-chromium: apt-get could not install chromium; the Web UI browser test will be skipped" >&2
fi
exit 0
