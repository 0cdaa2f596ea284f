#!/usr/bin/env bash
# Debian's Chromium for the console's browser tests (tests/integration/
# test_console_browser.py drives it with Playwright for Python through
# executable_path: Playwright's own browser download is never used), and a
# font so that pages and screenshots render text. Installs only what is
# missing; prints the browser's path.
set -euo pipefail
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/lib/common.sh
source "$DEPLOY_DIR/lib/common.sh"
mkdir -p "$STREAMFORGE_CACHE"
if [[ $(id -u) -eq 0 ]]; then
    ensure_packages chromium fonts-dejavu-core
fi
command -v chromium >/dev/null || die "chromium is not installed (run this script as root: apt-get install chromium)"
command -v chromium
