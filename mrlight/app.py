"""Restore images in the browser: a Gradio app over one or more checkpoints.

    pip install -e ".[app]"
    python -m mrlight.app ckpt=checkpoints/mrlight-denoise-s25-cpu.ckpt [ckpt=B.ckpt ...] [port=7860] [host=127.0.0.1]
                          [device=auto|cpu|cuda] [max_pixels=4000000] [tile=256 tile_above=512 tile_overlap=32]
                          [examples=true]

Upload an image (or pick one of the examples, made at start-up from scikit-image's photographs),
choose a checkpoint and a sampler preset, press Restore: the input and the result are shown side by
side under a before/after slider, with the time and the number of network evaluations (NFE), and
the result can be downloaded as a PNG. Images with a side above `tile_above` pixels are restored
in `tile` x `tile` tiles (as `sample.py tile=256`); images above `max_pixels` are refused.

The result equals `sample.py`'s for the same checkpoint, sampler and seed: the prior noise is
seeded from `seed` and the uploaded file's name without its extension, as `sample.py` seeds from
the input file's stem. The page prints the equivalent `sample.py` command under every result.

API (gradio_client): `Client(url).predict(handle_file("noisy.png"), api_name="/restore")` returns
the restored PNG's path; every input after the image has a default (the first checkpoint, its own
sampler, seed 0, float32).

Exit codes: 0 stopped, 2 bad arguments, no checkpoint that loads, gradio missing, or port taken.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

# No calls home: analytics, Hugging Face telemetry and the version check stay off unless asked for.
for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                     ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_key, _value)

DEFAULTS = {
    "ckpt": [],               # one or more checkpoint files (repeat the key)
    "host": "127.0.0.1",
    "port": 7860,
    "device": "auto",         # auto | cpu | cuda[:N]
    "max_pixels": 4_000_000,  # larger uploads are refused with a message
    "tile": 256,              # tile size for large images ...
    "tile_above": 512,        # ... used when a side exceeds this many pixels
    "tile_overlap": 32,
    "examples": True,         # make example images at start-up
}
USAGE = "python -m mrlight.app ckpt=A.ckpt [ckpt=B.ckpt ...] [port=7860] [host=127.0.0.1]"

# Sampler presets: the `sampler.*` arguments of sample.py that each one stands for.
OWN = "Checkpoint's own"
PRESETS: dict[str, dict] = {
    OWN: {},
    "MR@5": {"sampler": "mr", "solver": "ode", "order": 2, "nfe": 5},
    "MR@10": {"sampler": "mr", "solver": "ode", "order": 2, "nfe": 10},
    "MR@20": {"sampler": "mr", "solver": "ode", "order": 2, "nfe": 20},
    "SDE@10": {"sampler": "mr", "solver": "sde", "order": 1, "nfe": 10},
    "posterior@100": {"sampler": "posterior", "nfe": 100},
}
PRECISION_CHOICES = ["32", "bf16", "16"]
MAX_NFE = 1000


class ArgumentError(ValueError):
    pass


def parse_args(argv: list[str]) -> dict:
    """key=value arguments through mrlight.cli (ckpt may repeat); a bad one raises ArgumentError."""
    from omegaconf import OmegaConf

    from mrlight.cli import parse_args as parse_key_values
    from mrlight.errors import ConfigError

    def key_of(arg: str) -> str:
        key = arg.split("=", 1)[0]
        return key[2:] if key.startswith("--") else key

    ckpts = [v for a in argv if "=" in a and key_of(a) == "ckpt" for v in a.split("=", 1)[1].split(",") if v]
    try:
        parsed = parse_key_values([a for a in argv if "=" not in a or key_of(a) != "ckpt"],
                                  {k: v for k, v in DEFAULTS.items() if k != "ckpt"})
    except ConfigError as err:
        raise ArgumentError(f"{err} (usage: {USAGE})") from None
    args = {**OmegaConf.to_container(parsed), "ckpt": ckpts}
    if not args["ckpt"]:
        raise ArgumentError(f"ckpt=... is required (usage: {USAGE})")
    if not 0 <= args["port"] < 65536:
        raise ArgumentError(f"port={args['port']}: expected 0..65535")
    if args["max_pixels"] < 1:
        raise ArgumentError(f"max_pixels={args['max_pixels']}: expected a positive number of pixels")
    if args["tile"] < 8 or not 0 <= args["tile_overlap"] < args["tile"] // 2:
        raise ArgumentError(f"tile={args['tile']} tile_overlap={args['tile_overlap']}: "
                            "need tile >= 8 and 0 <= tile_overlap < tile / 2")
    return args


def _blank_sampler() -> dict:
    """The project's default `sampler.*` block (configs/defaults.yaml), {} where it cannot be read."""
    try:
        from omegaconf import OmegaConf

        from mrlight.config import load_config

        return dict(OmegaConf.to_container(load_config().sampler))
    except Exception:  # noqa: BLE001 - the checkpoint's block is complete on its own
        return {}


def sampler_settings(stored: dict, overrides: dict, blank: dict | None = None) -> dict:
    """The sampler settings sample.py uses for a checkpoint's stored block and `sampler.*` arguments:
    the stored block, or the project's defaults when the arguments choose another sampler."""
    blank = _blank_sampler() if blank is None else blank
    if "sampler" in overrides and overrides["sampler"] != stored.get("sampler", "mr"):
        base = {**blank, "nfe": None}
    else:
        base = {**blank, **stored}
    return {**base, **overrides}


def describe_sampler(s: dict) -> str:
    name = s.get("sampler", "mr")
    if name == "mr":
        extra = f"{s.get('solver', 'ode')} order {s.get('order', 2)}"
        if s.get("corrector") not in (None, "none"):
            extra += f", {s['corrector']} corrector"
        return f"MR Sampler ({extra})"
    return {"posterior": "IR-SDE posterior sampling", "euler": "Euler-Maruyama", "heun": "Heun"}.get(name, name)


@dataclass
class Checkpoint:
    key: str                    # what the dropdown and the API call it: the file name, or the path if names clash
    path: str
    error: str | None = None
    restorers: dict = field(default_factory=dict)  # (precision, compile, channels_last) -> Restorer

    @property
    def ok(self) -> bool:
        return self.error is None


def load_checkpoints(paths: list[str], device: str) -> list[Checkpoint]:
    from mrlight.inference import Restorer

    names = [Path(p).name for p in paths]
    out = []
    for path, name in zip(paths, names):
        ckpt = Checkpoint(key=name if names.count(name) == 1 else path, path=path)
        try:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")
            ckpt.restorers[("32", False, False)] = Restorer.from_checkpoint(path, device=device)
        except Exception as err:  # noqa: BLE001 - any failure is reported, the other checkpoints still serve
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            ckpt.error = f"{type(err).__name__}: {message}" if not isinstance(err, ValueError) else message
        out.append(ckpt)
    return out


def make_examples(folder: Path) -> list[str]:
    """Degraded crops of scikit-image's bundled photographs (no downloads): sigma-25 noise and rain."""
    import numpy as np
    import skimage.data
    import torch

    from mrlight.data.degradations import build_degradation
    from mrlight.data.io import write_image

    def photo(name: str, top: int, left: int, size: int | None) -> torch.Tensor:
        image = getattr(skimage.data, name)()
        if size is not None:
            image = image[top:top + size, left:left + size]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255

    noise = build_degradation({"name": "noise", "sigma": 25})
    rain = build_degradation({"name": "rain"})
    items = [
        ("astronaut_noisy25", noise, photo("astronaut", 20, 140, 256)),
        ("chelsea_noisy25", noise, photo("chelsea", 30, 110, 256)),
        ("coffee_noisy25", noise, photo("coffee", 40, 160, 256)),
        ("rocket_rainy", rain, photo("rocket", 60, 200, 256)),
        ("coffee_full_noisy25_tiled", noise, photo("coffee", 0, 0, None)),  # 400 x 600: restored in tiles
    ]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, (name, degrade, clean) in enumerate(items):
        path = folder / f"{name}.png"
        write_image(degrade(clean, np.random.default_rng(k)).float().clamp(0, 1), path)
        files.append(str(path))
    return files


class App:
    """The restore logic behind the page and the API, independent of the widgets."""

    def __init__(self, checkpoints: list[Checkpoint], args: dict, device: str, workdir: Path):
        self.checkpoints = {c.key: c for c in checkpoints}
        self.args = args
        self.device = device
        self.workdir = workdir
        self.blank = _blank_sampler()

    @property
    def default_checkpoint(self) -> str:
        return next(c.key for c in self.checkpoints.values() if c.ok)

    def _checkpoint(self, key) -> Checkpoint:
        import gradio as gr

        key = key or self.default_checkpoint
        ckpt = self.checkpoints.get(key) or next(
            (c for c in self.checkpoints.values() if key in (c.path, Path(c.path).name)), None)
        if ckpt is None:
            raise gr.Error(f"unknown checkpoint {key!r}; this app serves: {', '.join(self.checkpoints)}")
        if not ckpt.ok:
            raise gr.Error(f"checkpoint {ckpt.key} could not be loaded: {ckpt.error}")
        return ckpt

    def restorer(self, ckpt: Checkpoint, precision: str, compile: bool, channels_last: bool):
        import gradio as gr

        from mrlight.inference import Restorer, precision_name

        try:
            key = (precision_name(precision), bool(compile), bool(channels_last))
            if key not in ckpt.restorers:
                ckpt.restorers[key] = Restorer.from_checkpoint(ckpt.path, device=self.device, precision=key[0],
                                                               compile=key[1], channels_last=key[2])
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return ckpt.restorers[key]

    def _read(self, image):
        """The uploaded file's path and name stem, after the pixel-limit check; gr.Error for anything unreadable."""
        import gradio as gr

        from mrlight.data import DataError, read_image
        from mrlight.data.io import image_size

        if image is None:
            raise gr.Error("no image: upload one (or pick an example) first")
        path = image.get("path") if isinstance(image, dict) else str(image)
        if not path:
            raise gr.Error("the upload holds no file; upload the image again")
        orig = (image.get("orig_name") if isinstance(image, dict) else None) or Path(path).name
        stem = Path(orig).stem or "image"
        unreadable = f"{orig} is not an image this app can read (unreadable, truncated or not an image)"
        try:
            height, width = image_size(path)
        except DataError:
            raise gr.Error(unreadable) from None
        except Exception as err:  # noqa: BLE001 - e.g. PIL's DecompressionBombError for absurd sizes
            raise gr.Error(f"{orig} cannot be opened: {err}") from None
        limit = int(self.args["max_pixels"])
        if height * width > limit:
            raise gr.Error(f"{orig} is {width} x {height} = {height * width / 1e6:.2f} MP, above this app's limit "
                           f"of {limit / 1e6:.2f} MP (max_pixels={limit}); crop or downscale it")
        try:
            lq = read_image(path)
        except DataError:
            raise gr.Error(unreadable) from None
        except MemoryError:
            raise gr.Error(f"{orig} is too large to decode on this machine") from None
        return lq, stem, orig

    def restore(self, image, checkpoint=None, sampler=OWN, nfe=None, seed=0, precision="32", compile=False,
                channels_last=False, progress=None) -> tuple[str, dict]:
        """Restore one upload; returns the PNG's path and what the page shows about the run."""
        import gradio as gr

        from mrlight.data.io import write_image

        lq, stem, orig = self._read(image)
        ckpt = self._checkpoint(checkpoint)
        sampler = sampler or OWN
        if sampler not in PRESETS:
            raise gr.Error(f"unknown sampler preset {sampler!r}; valid: {', '.join(PRESETS)}")
        overrides = dict(PRESETS[sampler])
        if nfe not in (None, "", 0, 0.0):  # empty or 0: the preset's NFE
            try:
                value = float(nfe)
            except (TypeError, ValueError):
                raise gr.Error(f"NFE={nfe!r} is not a number") from None
            if value != int(value) or not 1 <= value <= MAX_NFE:
                raise gr.Error(f"NFE={nfe!r}: expected a whole number from 1 to {MAX_NFE}")
            overrides["nfe"] = int(value)
        try:
            seed = 0 if seed in (None, "") else int(float(seed))
        except (TypeError, ValueError):
            raise gr.Error(f"seed={seed!r} is not a whole number") from None
        restorer = self.restorer(ckpt, precision or "32", compile, channels_last)
        settings = sampler_settings(restorer.sampler, overrides, self.blank)
        height, width = lq.shape[-2:]
        tile = int(self.args["tile"]) if max(height, width) > int(self.args["tile_above"]) else None
        overlap = int(self.args["tile_overlap"])

        calls = {"n": 0}
        nfe_used = settings.get("nfe")
        steps = None if nfe_used is None else ((int(nfe_used) + 1) // 2 if settings.get("sampler") == "heun"
                                              else int(nfe_used))

        def callback(_state):
            calls["n"] += 1
            if progress is not None:
                progress((calls["n"], steps), desc=f"sampling, step {calls['n']}" + (f" of {steps}" if steps else ""),
                         unit="steps")

        if progress is not None:
            progress(0, desc="sampling")
        start = time.perf_counter()
        try:
            restored = restorer(lq, name=stem, tile=tile, tile_overlap=overlap, seed=seed, callback=callback,
                                **settings)
        except gr.Error:
            raise
        except (ValueError, TypeError, ArithmeticError) as err:  # bad sampler option, NaN, precision failure
            raise gr.Error(f"restoration failed: {err}") from None
        except Exception as err:  # noqa: BLE001 - the app must stay up whatever the network does
            traceback.print_exc()
            raise gr.Error(f"restoration failed ({type(err).__name__}: {err})") from None
        seconds = time.perf_counter() - start
        self._prune_outputs()
        out_dir = Path(tempfile.mkdtemp(dir=self.workdir, prefix="out-"))
        out_path = out_dir / f"{stem}_restored.png"
        write_image(restored.cpu(), out_path)
        info = {"seconds": seconds, "nfe": nfe_used, "sampler": settings, "preset": sampler, "checkpoint": ckpt,
                "seed": seed, "name": stem, "orig": orig, "size": (width, height), "tile": tile, "overlap": overlap,
                "precision": restorer.precision, "compile": restorer.compile, "channels_last": restorer.channels_last,
                "overrides": overrides}
        return str(out_path), info

    def _prune_outputs(self, keep: int = 64) -> None:
        """Results of earlier requests beyond the `keep` newest are deleted (gradio keeps its own copies an hour)."""
        outs = sorted(self.workdir.glob("out-*"), key=lambda p: p.stat().st_mtime)
        for old in outs[:-keep] if len(outs) > keep else []:
            shutil.rmtree(old, ignore_errors=True)

    def command(self, info: dict) -> str:
        """The sample.py command that writes the same PNG."""
        parts = [f"python sample.py ckpt={info['checkpoint'].path} input={info['orig']} output=restored/",
                 f"seed={info['seed']}"]
        parts += [f"sampler.{k}={v}" for k, v in info["overrides"].items()]
        if info["tile"]:
            parts.append(f"tile={info['tile']} tile_overlap={info['overlap']}")
        if info["precision"] != "32":
            parts.append(f"precision={info['precision']}")
        if info["compile"]:
            parts.append("compile=true")
        if info["channels_last"]:
            parts.append("channels_last=true")
        return " ".join(parts)

    def summary(self, info: dict) -> str:
        width, height = info["size"]
        nfe = info["nfe"]
        per = f", {1000 * info['seconds'] / nfe:.0f} ms per NFE" if nfe else ""
        tiled = f", in {info['tile']} px tiles" if info["tile"] else ""
        opts = [f"precision {info['precision']}"] + (["compiled"] if info["compile"] else []) + \
               (["channels_last"] if info["channels_last"] else [])
        return (f"**{info['seconds']:.2f} s** for {width} x {height} px{tiled} · **NFE {nfe}**{per}  \n"
                f"{info['preset']}: {describe_sampler(info['sampler'])} · {info['checkpoint'].key} · "
                f"seed {info['seed']}, name `{info['name']}` · {', '.join(opts)}  \n"
                f"Same PNG from the command line: `{self.command(info)}`")


def build_ui(app: App, examples: list[str]):
    import gradio as gr

    ok = [c for c in app.checkpoints.values() if c.ok]
    failed = [c for c in app.checkpoints.values() if not c.ok]
    choices = [(c.key, c.key) for c in ok] + [(f"{c.key} (failed to load)", c.key) for c in failed]

    def own_label(key) -> str:
        ckpt = app.checkpoints.get(key)
        if ckpt is None or not ckpt.ok:
            return ""
        stored = ckpt.restorers[("32", False, False)].sampler
        return f"{describe_sampler(stored)}, NFE {stored.get('nfe')}"

    def preset_nfe(preset, key) -> int | None:
        if preset in PRESETS and "nfe" in PRESETS[preset]:
            return PRESETS[preset]["nfe"]
        ckpt = app.checkpoints.get(key)
        return ckpt.restorers[("32", False, False)].sampler.get("nfe") if ckpt is not None and ckpt.ok else None

    with gr.Blocks(title="mrlight: image restoration with MR diffusion", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("## mrlight: restore an image with a Mean-Reverting diffusion model\n"
                    "Upload a degraded image (or pick an example below), choose a checkpoint and a sampler, "
                    "press **Restore**. The MR Sampler restores in 5-20 network evaluations (NFE) what IR-SDE's "
                    "posterior sampling does in 100.")
        if failed:
            gr.Markdown("**Some checkpoints could not be loaded:**\n"
                        + "\n".join(f"- `{c.path}`: {c.error}" for c in failed), elem_id="ckpt-errors")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = gr.Image(label="Degraded image", type="filepath", image_mode=None, format="png",
                                 sources=["upload", "clipboard"], height=420, elem_id="input-image")
                with gr.Row():
                    checkpoint = gr.Dropdown(choices, value=app.default_checkpoint, label="Checkpoint",
                                             info=own_label(app.default_checkpoint) and
                                             f"its own sampler: {own_label(app.default_checkpoint)}")
                    sampler = gr.Dropdown(list(PRESETS), value=OWN, label="Sampler",
                                          info="MR@k: MR Sampler, ODE order 2, k NFE; SDE@10: first-order MR SDE")
                with gr.Row():
                    nfe = gr.Number(value=preset_nfe(OWN, app.default_checkpoint), label="NFE", precision=0,
                                    minimum=0, maximum=MAX_NFE, info="network evaluations; set by the preset")
                    seed = gr.Number(value=0, label="Seed", precision=0,
                                     info="with the file name, seeds the prior noise (as sample.py)")
                with gr.Accordion("Advanced: inference precision", open=False):
                    precision = gr.Radio(PRECISION_CHOICES, value="32", label="Precision",
                                         info="autocast of the network call; the sampler stays float32")
                    with gr.Row():
                        compile_ = gr.Checkbox(value=False, label="torch.compile (slow first call)")
                        channels_last = gr.Checkbox(value=False, label="channels_last")
                button = gr.Button("Restore", variant="primary", elem_id="restore-button")
            with gr.Column(scale=1):
                if hasattr(gr, "ImageSlider"):
                    result = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", format="png",
                                            interactive=False, elem_id="result-slider", max_height=420)
                else:  # older gradio: the restored image alone (the input stays on the left)
                    result = gr.Image(label="Restored", type="filepath", format="png", interactive=False,
                                      elem_id="result-slider", height=420)
                info = gr.Markdown("Restored images appear here, with the time and the NFE they took.",
                                   elem_id="result-info")
                download = gr.DownloadButton("Download restored PNG", visible=False, elem_id="download-button")
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[image],
                        label="Examples: scikit-image photographs with sigma-25 noise or synthetic rain "
                              "(the last one, 600 x 400, is restored in tiles)")

        # The API endpoint: the image first, every other input with a default, the restored PNG out.
        # Its NFE defaults to 0 (the preset's), where the page's NFE box shows the preset's number.
        api_out = gr.Image(type="filepath", format="png", visible=False, label="Restored image")
        api_nfe = gr.Number(value=0, precision=0, visible=False, label="NFE (0: the preset's)")
        api_button = gr.Button(visible=False)
        inputs = [image, checkpoint, sampler, nfe, seed, precision, compile_, channels_last]
        api_inputs = [image, checkpoint, sampler, api_nfe, seed, precision, compile_, channels_last]

        def restore(image, checkpoint=None, sampler=OWN, nfe=0, seed=0, precision="32", compile=False,
                    channels_last=False, progress=gr.Progress()):
            """Restore an image; returns the restored PNG."""
            path, _ = app.restore(image, checkpoint, sampler, nfe, seed, precision, compile, channels_last, progress)
            return path

        def restore_page(image, checkpoint, sampler, nfe, seed, precision, compile, channels_last,
                         progress=gr.Progress()):
            path, run = app.restore(image, checkpoint, sampler, nfe, seed, precision, compile, channels_last, progress)
            before = image.get("path") if isinstance(image, dict) else image
            shown = (before, path) if hasattr(gr, "ImageSlider") else path
            return shown, app.summary(run), gr.DownloadButton(value=path, visible=True)

        common = dict(preprocess=False, concurrency_id="restore", concurrency_limit=1)
        button.click(restore_page, inputs=inputs, outputs=[result, info, download], api_visibility="private",
                     show_progress_on=[result], **common)
        api_button.click(restore, inputs=api_inputs, outputs=[api_out], api_name="restore", **common)

        def on_checkpoint(key, preset):
            label = own_label(key)
            return (gr.Dropdown(info=f"its own sampler: {label}" if label else "failed to load"),
                    preset_nfe(preset, key) or 0)

        checkpoint.change(on_checkpoint, [checkpoint, sampler], [checkpoint, nfe], api_visibility="private")
        sampler.change(lambda p, k: preset_nfe(p, k) or 0, [sampler, checkpoint], [nfe], api_visibility="private")
    return demo


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
    except ArgumentError as err:
        return _error(str(err))
    try:
        import gradio as gr
    except ImportError:
        return _error('gradio is not installed; install the app extra: pip install -e ".[app]"')
    import torch

    device = args["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        return _error(f"device={device} but this machine has no usable CUDA GPU; use device=cpu or auto")
    checkpoints = load_checkpoints(args["ckpt"], device)
    for c in checkpoints:
        if not c.ok:
            print(f"warning: checkpoint {c.path} could not be loaded: {c.error}", file=sys.stderr, flush=True)
    if not any(c.ok for c in checkpoints):
        return _error("none of the checkpoints loads: "
                      + "; ".join(f"{c.path}: {c.error}" for c in checkpoints))

    workdir = Path(tempfile.mkdtemp(prefix="mrlight-app-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    examples = make_examples(workdir / "examples") if args["examples"] else []
    app = App(checkpoints, args, device, workdir)
    demo = build_ui(app, examples)
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],  # local fonts: no font downloads
                           font_mono=["ui-monospace", "monospace"])
    demo.queue(max_size=32)
    try:
        demo.launch(server_name=args["host"], server_port=args["port"], share=False, show_error=True,
                    theme=theme, max_file_size="64mb", allowed_paths=[str(workdir)], footer_links=["api"],
                    ssr_mode=False, quiet=False)
    except OSError as err:
        return _error(f"cannot serve on {args['host']}:{args['port']}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
