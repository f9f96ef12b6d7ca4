"""Frames per second of `lolnerf view` while the camera is dragged, measured in headless Chromium.

Starts `lolnerf view --model RUN`, opens the page, sets the resolution, waits for the identity's bake (or its
fallback to the network) and a sharp frame, then drags the camera for --seconds (a mouse move every 30 ms) and counts the frames the
page received (its `frame N` readout). Prints frames per second while dragging, the page's own fps
readout at the end of the drag, and the time of the sharp frame after the drag; optionally saves a
screenshot of the page.

    python examples/measure_viewer_fps.py RUN [--resolution 128] [--preview 1/2] [--seconds 15] [--screenshot page.png]

Needs Chromium (`apt-get install chromium`) and playwright (the test extra)."""

from __future__ import annotations

import argparse
import io
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from PIL import Image
from playwright.sync_api import sync_playwright


def status(page) -> tuple[int, str]:
    text = page.inner_text("body")
    m = re.search(r"frame (\d+) ·", text)
    return (int(m.group(1)) if m else -1), text


def wait(page, cond, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n, text = status(page)
        if cond(n, text):
            return text
        time.sleep(0.1)
    raise SystemExit(f"timed out; the page says:\n{status(page)[1][:500]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--resolution", default="128")
    ap.add_argument("--preview", default="1/2", help="the page's 'While moving' setting: 1/4, 1/2 or full")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mkdtemp(prefix="lolnerf-view-")
    server = subprocess.Popen([sys.executable, "-m", "lolnerf_cli", "view", "--model", args.run, "--port", str(port),
                               "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--enable-unsafe-swiftshader", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 640})
            page.set_default_timeout(300_000)
            for _ in range(600):
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:  # noqa: BLE001 - the server is still loading the model
                    time.sleep(0.5)
            page.wait_for_selector("canvas")
            res = page.get_by_label("Resolution")
            if res.input_value() != args.resolution:
                res.click()
                page.get_by_role("option", name=args.resolution, exact=True).click()
            prev = page.get_by_label("While moving")
            if prev.input_value() != args.preview:
                prev.click()
                page.get_by_role("option", name=args.preview, exact=True).click()
            wait(page, lambda n, t: f"{args.resolution}x" in t and re.search(r" sharp · (baked|exact)", t), 600)
            n0, _ = status(page)
            t0 = time.monotonic()
            page.mouse.move(250, 320)
            page.mouse.down()
            i = 0
            while time.monotonic() - t0 < args.seconds:
                i += 1
                page.mouse.move(250 + 150 * ((i % 80) / 80), 320 + 10 * ((i % 20) / 20))
                time.sleep(0.03)
            n1, text = status(page)
            t1 = time.monotonic()
            readout = re.search(r"([\d.]+) fps · frame \d+ · (\d+x\d+) px (\w+) · (\w+) · (\d+) ms", text)
            page.mouse.up()
            text = wait(page, lambda n, t: n > n1 and re.search(r" sharp · (baked|exact)", t), 120)
            sharp = re.search(r"frame \d+ · (\d+x\d+) px sharp · (baked|exact) · (\d+) ms", text)
            print(f"dragging {t1 - t0:.1f} s: {n1 - n0} frames, {(n1 - n0) / (t1 - t0):.2f} frames per second")
            if readout:
                print(f"readout at the end of the drag: {readout.group(1)} fps, {readout.group(2)} px "
                      f"{readout.group(3)}, {readout.group(4)}, {readout.group(5)} ms per frame")
            if sharp:
                print(f"sharp frame after the drag: {sharp.group(1)} px, {sharp.group(2)}, {sharp.group(3)} ms")
            if args.screenshot:
                for close in page.locator(".mantine-Notification-closeButton").all():   # the software-WebGL notice
                    close.click()
                time.sleep(1.0)
                img = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
                img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.screenshot, optimize=True)
                print(f"screenshot: {args.screenshot}")
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
