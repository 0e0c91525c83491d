"""The Gradio app (`python -m mrlight.app`, optional extra `app`): its API through gradio_client, bad
input, and a real headless Chromium that uploads an image, restores it and downloads the result,
which must equal sample.py's output pixel for pixel.

The app runs as a subprocess on a free loopback port with the shipped denoiser and a broken
"checkpoint" beside it. The browser test needs Debian's chromium (`make test` installs it when run
as root); elsewhere it skips with the reason, except under CI=true, where a missing browser fails.
Set MRLIGHT_SCREENSHOTS=1 to refresh docs/img/app.png from the browser run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

gradio_client = pytest.importorskip("gradio_client", reason='the app extra is not installed: pip install -e ".[app]"')
pytest.importorskip("gradio", reason='the app extra is not installed: pip install -e ".[app]"')

DENOISER = REPO / "checkpoints" / "mrlight-denoise-s25-cpu.ckpt"
DERAINER = REPO / "checkpoints" / "mrlight-derain-rain100h-cpu.ckpt"
CHROMIUM = os.environ.get("MRLIGHT_CHROMIUM", "/usr/bin/chromium")
MAX_PIXELS = 40_000  # the test server refuses images above 200 x 200
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_TEMP_DIR": str(tmp / "gradio"),
                "MPLCONFIGDIR": str(tmp / "mpl")})
    return env


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)))


def _noisy_crop(folder: Path, name: str, size: int, top: int = 20, left: int = 170) -> tuple[Path, np.ndarray]:
    """A crop of scikit-image's astronaut, sigma-25 noise (seed 0), as an 8-bit PNG; returns it and the clean crop."""
    import skimage.data

    clean = skimage.data.astronaut()[top:top + size, left:left + size].astype(np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1)
    path = folder / f"{name}.png"
    Image.fromarray((noisy * 255).round().astype(np.uint8)).save(path)
    return path, clean


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _sample_py(tmp: Path, image: Path, *args: str) -> np.ndarray:
    out = tmp / f"sample_py_{len(list(tmp.glob('sample_py_*')))}"
    run = subprocess.run([sys.executable, str(REPO / "sample.py"), f"ckpt={DENOISER}", f"input={image}",
                          f"output={out}", "lpips=false", "progress=false", *args],
                         cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return _read(out / f"{image.stem}.png")


class Server:
    def __init__(self, tmp: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tmp / f"app_{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "mrlight.app", *args, f"port={self.port}"],
                                     cwd=REPO, env=_env(tmp), stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 240) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the app did not answer on {self.url} within {timeout} s:\n{self.output()}")

    def alive(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return self.proc.poll() is None and response.status == 200

    def output(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port: the shipped denoiser first, then a file that is not a checkpoint; images
    with a side above 128 px restored in 96 px tiles (small enough for a quick tiled test)."""
    tmp = tmp_path_factory.mktemp("app")
    broken = tmp / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    srv = Server(tmp, f"ckpt={DENOISER}", f"ckpt={broken}", f"max_pixels={MAX_PIXELS}", "tile=96", "tile_above=128")
    try:
        yield srv.wait()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


# ---------------------------------------------------------------- command line (no server)

def test_unknown_key_and_missing_ckpt_are_errors(capsys):
    from mrlight.app import main

    assert main([f"ckpt={DENOISER}", "prot=8000"]) == 2
    assert "unknown key 'prot' (command line); did you mean 'port'?" in capsys.readouterr().err
    assert main(["port=7860"]) == 2
    assert "ckpt=... is required" in capsys.readouterr().err
    assert main([f"ckpt={DENOISER}", "port=http"]) == 2
    assert "port='http' (command line): expected integer" in capsys.readouterr().err


def test_presets_match_sample_py_arguments():
    from mrlight.app import PRESETS, sampler_settings

    stored = {"sampler": "mr", "nfe": 10, "solver": "ode", "order": 2, "corrector": "none"}
    assert sampler_settings(stored, PRESETS["Checkpoint's own"], blank={}) == stored
    assert sampler_settings(stored, PRESETS["SDE@10"], blank={}) == {**stored, "solver": "sde", "order": 1}
    post = sampler_settings(stored, PRESETS["posterior@100"], blank={"sampler": "mr", "nfe": 10, "order": 2})
    assert post == {"sampler": "posterior", "nfe": 100, "order": 2}  # the project's defaults, not the stored MR ones


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_no_loadable_checkpoint_exits_2(tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"nope")
    run = subprocess.run([sys.executable, "-m", "mrlight.app", f"ckpt={broken}", f"port={_free_port()}"], cwd=REPO,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=170)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "none of the checkpoints loads" in run.stderr and "broken.ckpt" in run.stderr


# ---------------------------------------------------------------- API (gradio_client)

@pytest.mark.slow
@pytest.mark.timeout(400)
def test_restore_api_denoises(server, client, tmp_path):
    noisy_path, clean = _noisy_crop(tmp_path, "astronaut_noisy", 96)
    start = time.perf_counter()
    out = client.predict(gradio_client.handle_file(str(noisy_path)), api_name="/restore")
    seconds = time.perf_counter() - start
    restored = _read(out)
    assert restored.shape == (96, 96, 3)
    clean8, noisy8 = (clean * 255).round(), _read(noisy_path)
    gain = psnr(restored, clean8) - psnr(noisy8, clean8)
    assert gain >= 5.0, f"restored only {gain:.2f} dB closer to the clean crop than the noisy input"
    print(f"/restore: {seconds:.2f} s, +{gain:.2f} dB")

    # A stochastic preset with another seed: the same PNG as sample.py's with the same sampler and seed.
    out = client.predict(gradio_client.handle_file(str(noisy_path)), sampler="SDE@10", seed=3, api_name="/restore")
    expected = _sample_py(tmp_path, noisy_path, "seed=3", "sampler.sampler=mr", "sampler.solver=sde",
                          "sampler.order=1", "sampler.nfe=10")
    assert np.abs(_read(out).astype(int) - expected.astype(int)).max() <= 1

    # A side above tile_above: restored in tiles, as sample.py tile=96 tile_overlap=32.
    wide_path, _ = _noisy_crop(tmp_path, "astronaut_wide", 160)
    out = client.predict(gradio_client.handle_file(str(wide_path)), nfe=3, api_name="/restore")
    expected = _sample_py(tmp_path, wide_path, "tile=96", "tile_overlap=32", "sampler.nfe=3")
    assert np.abs(_read(out).astype(int) - expected.astype(int)).max() <= 1
    from mrlight.data import read_image
    from mrlight.data.io import to_uint8
    from mrlight.inference import Restorer

    untiled = to_uint8(Restorer.from_checkpoint(DENOISER)(read_image(wide_path), name=wide_path.stem, nfe=3))
    assert not np.array_equal(untiled, expected)  # tiling changed the result, so the app did tile


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bad_input_is_a_message_and_the_app_stays_up(server, client, tmp_path):
    from gradio_client.exceptions import AppError

    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    big, _ = _noisy_crop(tmp_path, "big", 256)  # 65536 px > MAX_PIXELS
    small, _ = _noisy_crop(tmp_path, "small", 32)
    cases = [
        (dict(image=gradio_client.handle_file(str(not_image))), "notes.png is not an image this app can read"),
        (dict(image=gradio_client.handle_file(str(big))), "above this app's limit"),
        (dict(image=gradio_client.handle_file(str(small)), checkpoint="broken.ckpt"),
         "checkpoint broken.ckpt could not be loaded"),
        (dict(image=gradio_client.handle_file(str(small)), nfe=100000), "NFE=100000"),
        (dict(image=gradio_client.handle_file(str(small)), precision="8"), "precision='8' is not valid"),
    ]
    with urllib.request.urlopen(server.url + "config", timeout=30) as response:  # the page lists the failure
        assert "could not be loaded" in response.read().decode()
    for kwargs, message in cases:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(api_name="/restore", **kwargs)
        assert server.alive()
    out = client.predict(gradio_client.handle_file(str(small)), nfe=2, api_name="/restore")  # still serving
    assert _read(out).shape == (32, 32, 3)


# ---------------------------------------------------------------- a real browser

def _browser_or_skip():
    """Playwright driving Debian's chromium; skip (fail under CI=true) when either is missing."""
    reasons = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append('playwright is not installed (pip install -e ".[app]")')
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        reasons.append(f"no chromium at {CHROMIUM} (as root: apt-get install -y chromium; `make test` does it)")
    if reasons:
        message = "; ".join(reasons)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {message}")
        pytest.skip(message)


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """The app as the README starts it: both shipped checkpoints (and the test's pixel limit)."""
    _browser_or_skip()
    srv = Server(tmp_path_factory.mktemp("app_readme"), f"ckpt={DENOISER.relative_to(REPO)}",
                 f"ckpt={DERAINER.relative_to(REPO)}", f"max_pixels={MAX_PIXELS}")
    try:
        yield srv.wait()
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_browser_restores_the_same_png_as_sample_py(readme_server, tmp_path):
    from playwright.sync_api import sync_playwright

    server = readme_server

    noisy_path, _ = _noisy_crop(tmp_path, "astronaut_face", 192, top=10, left=150)
    too_big, _ = _noisy_crop(tmp_path, "too_big", 256)
    outside = []

    def only_loopback(route):  # the page must work offline: no fonts, analytics or CDNs
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.goto(server.url)
            upload = page.locator("#input-image input[type=file]")
            upload.wait_for(state="attached", timeout=60_000)
            upload.set_input_files(str(noisy_path))
            page.locator("#input-image img").first.wait_for(timeout=30_000)
            page.locator("#restore-button").click()
            # The progress bar: the sampler's steps counted in the result panel while it runs.
            download, progress = page.locator("#download-button"), set()
            deadline = time.monotonic() + 300
            while not download.is_visible() and time.monotonic() < deadline:
                text = page.locator("#result-slider").inner_text()
                progress.update(m.group(0) for m in re.finditer(r"step \d+ of 10", text))
                time.sleep(0.05)
            download.wait_for(state="visible", timeout=10_000)
            assert progress, "no progress bar (sampling, step k of 10) while restoring"
            info = page.locator("#result-info").inner_text()
            assert "NFE 10" in info and " s for 192 x 192 px" in info, info
            assert "python sample.py" in info and "input=astronaut_face.png" in info, info
            page.locator("#result-slider img").first.wait_for(timeout=30_000)
            page.mouse.move(0, 0)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            if os.environ.get("MRLIGHT_SCREENSHOTS") == "1":  # the README's screenshot, 256 colours to keep it small
                Image.open(tmp_path / "app.png").convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
                    REPO / "docs" / "img" / "app.png", optimize=True)
            with page.expect_download(timeout=60_000) as pending:
                download.click()
            pending.value.save_as(str(tmp_path / "downloaded.png"))

            # Bad input: an image over the pixel limit is a message in the page, and the app lives on.
            page.locator("#input-image button[aria-label='Remove Image']").first.click()
            page.locator("#input-image input[type=file]").set_input_files(str(too_big))
            page.locator("#restore-button").click()
            page.get_by_text("above this app's limit", exact=False).first.wait_for(timeout=60_000)
            assert server.alive()
        finally:
            browser.close()

    assert not outside, f"the page asked for outside resources: {outside[:5]}"
    downloaded = _read(tmp_path / "downloaded.png")
    expected = _sample_py(tmp_path, noisy_path, "seed=0")  # the checkpoint's own sampler, the page's default
    assert downloaded.shape == expected.shape == (192, 192, 3)
    diff = np.abs(downloaded.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"{(diff > 0).mean():.2%} of the values differ, by up to {diff.max()}"
    assert server.alive()
