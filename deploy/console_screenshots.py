"""Screenshots of the console's five pages, for the README, from a running API.

    make demo                    # in one terminal: prints the console's URL and a key
    .venv/bin/python deploy/console_screenshots.py --key sfk_... [--url http://127.0.0.1:8000]

Drives Debian's Chromium (``deploy/browser.sh``) with Playwright for Python,
logs in with the key, and writes ``docs/console/{plant,device,alarms,pipeline,registry}.png``
(the Device page is the first device on the Plant page, or ``--device``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

OUT = Path(__file__).resolve().parents[1] / "docs" / "console"


def shoot(page: Page, name: str, out: Path) -> None:
    """Wait for the page to draw, let live values arrive, save a PNG."""
    page.wait_for_selector(f"body[data-ready={name}]")
    page.wait_for_function("window.__liveReady === true")  # the badge green, values moving
    time.sleep(2.5)
    page.screenshot(path=str(out / f"{name}.png"))
    print(out / f"{name}.png")


def main() -> None:
    """Parse the arguments and take the five screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an admin key shows every page in full")
    parser.add_argument("--device", help="the device of the Device page")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.set_default_timeout(30_000)
        page.goto(args.url + "/")
        page.fill("#key", args.key)
        page.click("button[type=submit]")
        shoot(page, "plant", args.out)
        device = args.device or page.locator("#plant tbody tr").first.get_attribute("data-device")
        # The last 15 minutes: raw readings and scores, live.
        page.evaluate("sessionStorage.setItem('streamforge.range', '15m')")
        page.goto(f"{args.url}/#/device/{device}")
        shoot(page, "device", args.out)
        page.goto(f"{args.url}/#/alarms")
        shoot(page, "alarms", args.out)
        page.goto(f"{args.url}/#/pipeline")
        shoot(page, "pipeline", args.out)
        page.goto(f"{args.url}/#/registry")
        shoot(page, "registry", args.out)
        browser.close()


if __name__ == "__main__":
    main()
