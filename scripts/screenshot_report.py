#!/usr/bin/env python3
"""Render an edgeq HTML report in real headless Chromium and save a PNG to look at.

The reports are self-contained SVG + CSS; this is how a change to them gets checked by
eye: `python scripts/screenshot_report.py edgeq-out/report.html -o report.png`.
Needs Debian's chromium (`apt-get install chromium`). Exits non-zero if the browser
fails or the screenshot is blank.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="edgeq-chromium-") as profile:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                               f"--window-size={width},{height}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.exists():
        sys.exit(f"chromium failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    if png.stat().st_size < 5000:  # a blank page compresses to almost nothing
        sys.exit(f"{png}: screenshot looks blank ({png.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path, help="report.html (or any edgeq HTML page)")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    screenshot(args.page, args.output, args.width, args.height)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
