"""Few-step sampling on a noise-prediction network, as it learns: PSNR, SSIM and the realism distance.

    python benchmarks/noise_curve.py --runs /work/runs/denoise_noise[,/work/runs/denoise_data]
    python benchmarks/noise_curve.py --ckpt checkpoints/<noise denoiser>.ckpt --table2     # the paper's Table 2

Every checkpoint (step_<N>.ckpt of benchmarks/train_cpu_models.py) restores the same held-out colour
crops (CBSD68 + sigma-25 noise, which the denoisers never train on) from the same prior x_T and the
same SDE noise with each sampler of SAMPLERS: the MR Sampler's data form (the default, ODE-2) at NFE
5/10/20, its noise form at 10/20, the stochastic MR SDE-1/-2 at 10, and IR-SDE posterior sampling at
20/100. Reported per row: PSNR and SSIM (RGB, per-image mean) and `swd`, the set-level sliced
Wasserstein distance over Laplacian-pyramid patches (mrlight.metrics; lower is more realistic;
Karras et al. 2018). The question it answers (issue 16): does MR@10 - posterior@100 close as the
network learns, in PSNR and in swd?

--table2 reproduces the MR Sampler paper's Table 2 on one checkpoint: noise-form vs data-form solver
at NFE 5/10/20/50 and posterior@100.
Writes benchmarks/out/<name>.{csv,md} and docs/img/<name>.png.

Issue 16, item 4 (why few-step sampling fails on a noise network, and what fixes it):

    python benchmarks/noise_curve.py --x0-error --runs /work/runs/denoise_noise --steps 2000 \
        --data-run /work/runs/denoise_data_refusion          # or --ckpt <a data checkpoint>
    python benchmarks/noise_curve.py --remedies --runs /work/runs/denoise_noise,/work/runs/denoise_data_refusion \
        --steps 2000,4000

--x0-error: the mean |x0_hat(t) - x0| of each network's data estimate at x_t drawn from the MR marginal
(t on a grid from T to 1, the same crops), with the clipped estimate, |eps_hat - eps|, the noisy input's
|mu - x0| and the term alpha(t) |x0 - mu| that a start at t < T drops (table noise_x0_error.md, plot
docs/img/noise_x0_error.png). --remedies: every checkpoint restores the crops with each remedy of
REMEDIES (clipping / dynamic thresholding of x0_hat, lower order or denser first steps, a later start
`t_start`, the stochastic MR SDE) and the posterior baselines (table noise_remedies.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_data import load_average, machine, test_subset  # noqa: E402

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402
from mrlight.metrics import RestorationMetrics  # noqa: E402
from mrlight.objectives import output_of  # noqa: E402
from mrlight.sampling import noise_network_defaults, sample  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

DATA = dict(sampler="mr", solver="ode", order=2, parameterization="data")
NOISE = dict(sampler="mr", solver="ode", order=2, parameterization="noise")
AUTO = {**DATA, **noise_network_defaults("noise", MRSDE())}  # what a noise checkpoint gets by default
# The noise defaults before they set t_min (x0_hat clipped, t_start; the ODE stops at the default t_min = 3):
# the remedies study measured these, and they solve the PF-ODE to its own end (sharper, lower PSNR).
CLIP_START = {**DATA, **noise_network_defaults("noise", MRSDE(), {"t_min": 3.0}), "t_min": 3.0}
SAMPLERS = [
    ("MR data", 5, DATA), ("MR data", 10, DATA), ("MR data", 20, DATA),
    ("MR noise", 10, NOISE), ("MR noise", 20, NOISE),
    ("MR SDE-1", 10, dict(sampler="mr", solver="sde", order=1)),
    ("MR SDE-2", 10, dict(sampler="mr", solver="sde", order=2)),
    ("posterior", 20, dict(sampler="posterior")), ("posterior", 100, dict(sampler="posterior")),
    # "MR auto": the data form plus noise_network_defaults, what a noise checkpoint gets by default
    ("MR auto", 5, AUTO), ("MR auto", 10, AUTO),
    ("MR clip+start", 5, CLIP_START), ("MR clip+start", 10, CLIP_START),
]
TABLE2 = [(form, nfe, opts) for form, opts in (("MR noise", NOISE), ("MR data", DATA), ("MR clip+start", CLIP_START),
                                               ("MR auto", AUTO))
          for nfe in (5, 10, 20, 50)]
TABLE2 += [("posterior", 100, dict(sampler="posterior"))]
METRICS = ("psnr", "ssim", "swd")


def _mr(**opts) -> dict:
    return {**dict(sampler="mr", solver="ode", order=2, parameterization="data"), **opts}


CLIP = dict(thresholding=True, threshold_max=1.0)  # dynamic thresholding with s = 1: a plain clip to [0, 1]
SDE2 = dict(solver="sde", order=2)
# Issue 16, item 4: remedies for few-step sampling on a noise network (data form unless said).
REMEDIES = [
    ("default", 10, _mr()),
    ("(a) clip", 10, _mr(**CLIP)),
    ("(b) dyn-thr", 10, _mr(thresholding=True)),
    ("(c) order 1", 10, _mr(order=1)),
    ("(c) linspace", 10, _mr(time_schedule="linspace")),
    ("(c) uniform-lambda", 10, _mr(time_schedule="uniform-lambda")),
    ("(c) clip uniform-lambda", 10, _mr(time_schedule="uniform-lambda", **CLIP)),
    *[(f"(d) t_start={ts}", 10, _mr(t_start=ts)) for ts in (70, 60, 50)],
    ("(d') clip lambda_min=0", 10, _mr(lambda_min=0.0, **CLIP)),  # starts at t = 60.5 from x_T itself
    *[(f"(a+d) clip t_start={ts}", 10, _mr(t_start=ts, **CLIP)) for ts in (80, 70, 60, 50, 40)],
    # what mrlight.sampling.noise_network_defaults added before it set t_min (clip + t_start, t_min 3)
    ("clip + t_start", 10, CLIP_START),
    ("(e) SDE-2", 10, _mr(**SDE2)),
    ("(e) SDE-2 clip", 10, _mr(**SDE2, **CLIP)),
    *[(f"(e) SDE-2 clip t_start={ts}", 10, _mr(**SDE2, **CLIP, t_start=ts)) for ts in (70, 60, 50)],
    ("default", 5, _mr()),
    ("(a) clip", 5, _mr(**CLIP)),
    *[(f"(a+d) clip t_start={ts}", 5, _mr(t_start=ts, **CLIP)) for ts in (70, 60, 50)],
    ("clip + t_start", 5, CLIP_START),
    ("(e) SDE-2 clip t_start=60", 5, _mr(**SDE2, **CLIP, t_start=60)),
    ("default", 20, _mr()),
    ("clip + t_start", 20, CLIP_START),
    # (f) the first-order ODE with the noise-network defaults (a PSNR / swd trade-off: docs/SAMPLERS.md)
    *[("(f) order 1 + clip + t_start", n, {**CLIP_START, "order": 1})
      for n in (5, 10, 20)],
    *[(f"(a+d) clip t_start={ts}", 20, _mr(t_start=ts, **CLIP)) for ts in (60, 50)],
    # (g) where the PF-ODE stops: the last step's order and the last positive time t_min (issue 16)
    *[("(g) final_order 1 + clip + t_start", n, {**CLIP_START, "final_order": 1})
      for n in (5, 10)],
    *[(f"(g) t_min={tm} + clip + t_start", n, {**CLIP_START, "t_min": tm})
      for tm in (5, 8, 12, 16, 20, 25) for n in (5, 10)],
    # what mrlight.sampling.noise_network_defaults adds today (clip, t_start and t_min: (g) chosen)
    *[("noise_network_defaults", n, AUTO) for n in (5, 10, 20)],
    ("posterior", 20, dict(sampler="posterior")), ("posterior", 100, dict(sampler="posterior")),
]


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.glob("step_*.ckpt") if (m := re.fullmatch(r"step_(\d+)\.ckpt", p.name))]
    return sorted(found)


def load(path: Path):
    ckpt = load_checkpoint(path)
    cfg = ckpt["hyper_parameters"]["config"]
    net = network_from_checkpoint(ckpt, path).eval().requires_grad_(False)
    sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
    return net, sde, output_of(cfg["objective"]["prediction"]), cfg


def _cache_key(path: Path, label: str, nfe: int, opts: dict, lq, seed: int) -> str:
    """A result is reused only for the same file (size, mtime), sampler options, crops and seeds."""
    st = path.resolve().stat()
    crops = f"{tuple(lq.shape)}:{float(lq.double().sum()):.6f}"
    return json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, label, nfe, sorted(opts.items(), key=str),
                       crops, seed], default=str)


@torch.inference_mode()
def evaluate(path: Path, samplers, lq, gt, seed: int, extra: dict | None = None,
             cache: dict | None = None) -> dict[str, dict]:
    """{label@nfe: {psnr, ssim, swd}} for one checkpoint; same x_T and SDE noise for every sampler.

    `cache` (a dict, updated in place) holds earlier results by `_cache_key`, so that a rerun with
    more checkpoints evaluates only the new ones."""
    net, sde, prediction, _ = load(path)
    x_T = torch.cat([sde.prior_sample(lq[i:i + 1], torch.Generator().manual_seed(seed + i)) for i in range(len(lq))])
    out = {}
    for label, nfe, opts in samplers:
        key = _cache_key(path, label, nfe, {**opts, **(extra or {})}, lq, seed)
        if cache is not None and key in cache:
            hit = cache[key]
            out[f"{label}@{nfe}"] = {**hit, "psnr_per_image": torch.tensor(hit["psnr_per_image"])}
            continue
        restored = sample(net, lq, sde, prediction=prediction, x_T=x_T, nfe=nfe,
                          generator=torch.Generator().manual_seed(seed + 10_000), **opts, **(extra or {})).clamp(0, 1)
        m = RestorationMetrics(lpips="off")
        m.update(restored, gt)
        values = m.compute()
        per_image = -10 * torch.log10((restored - gt).pow(2).flatten(1).mean(1))  # for paired differences
        out[f"{label}@{nfe}"] = {**{k: float(values[k]) for k in METRICS}, "psnr_per_image": per_image}
        if cache is not None:
            cache[key] = {**{k: float(values[k]) for k in METRICS}, "psnr_per_image": per_image.tolist()}
    return out


def input_metrics(lq, gt) -> dict:
    m = RestorationMetrics(lpips="off")
    m.update(lq, gt)
    values = m.compute()
    return {k: float(values[k]) for k in METRICS}


def plot(curves: dict, path: Path, title: str) -> None:
    """PSNR and swd against the training step, one line per sampler; one row of panels per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.0 * len(curves)), dpi=90)
    axes = fig.subplots(len(curves), 2, squeeze=False)
    for row, (run, (points, lq_row)) in zip(axes, curves.items()):
        keys = list(points[0][1])
        for ax, metric, label in ((row[0], "psnr", "PSNR (dB, RGB)"), (row[1], "swd", "swd (x1e3, lower is better)")):
            for key in keys:
                style = "-" if key.startswith("MR data") else ("--" if key.startswith("MR noise") else
                                                               "-." if key.startswith("MR SDE") else ":")
                ax.plot([s for s, _ in points], [r[key][metric] for _, r in points], style, marker="o", ms=3, label=key,
                        lw=2.5 if key.startswith("MR auto") else 1.2)
            ax.axhline(lq_row[metric], color="gray", lw=1, ls="--", label="noisy input")
            ax.set_xscale("log")
            if metric == "swd":
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_title(run, fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def table(rows: list[dict], keys: list[str], lq_row: dict, gap: bool) -> list[str]:
    """One row per checkpoint; with `gap`, MR@10 - posterior@100 in dB and the swd ratio, for the plain
    data form ("MR data") and, when evaluated, the noise checkpoint's default ("MR auto")."""
    forms = [f for f in ("MR data", "MR auto") if gap and f"{f}@10" in keys]
    head = "| run | step | " + " | ".join(keys) + "".join(
        f" | {f}@10 - post@100 (dB) | swd {f}@10 / post@100" for f in forms) + " |"
    lines = [head, "|---" * (2 + len(keys) + 2 * len(forms)) + "|",
             "| noisy input | | " + " | ".join(f"{lq_row['psnr']:.2f} / {lq_row['ssim']:.3f} / {lq_row['swd']:.1f}"
                                                for _ in keys[:1]) + " |" * (len(keys) - 1 + 2 * len(forms) + 1)]
    for r in rows:
        cells = " | ".join(f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.3f} / {r[k]['swd']:.1f}" for k in keys)
        extra = "".join(f" | {r[f + '@10']['psnr'] - r['posterior@100']['psnr']:+.2f}"
                        f" | {r[f + '@10']['swd'] / r['posterior@100']['swd']:.2f}" for f in forms)
        lines.append(f"| {r['run']} | {r['step']} | {cells}{extra} |")
    return lines


X0_ERROR_TIMES = 20  # t from T down to 1


@torch.inference_mode()
def table2(r: dict) -> list[str]:
    """The MR Sampler paper's Table 2 layout (rows: solver form, columns: NFE) and issue 16's bars for
    the noise checkpoint's default sampler ("MR auto") against posterior@100."""
    nfes = (5, 10, 20, 50)
    cell = lambda v: f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['swd']:.1f}"  # noqa: E731
    names = {"MR noise": "MR Sampler, noise form (ODE-2)", "MR data": "MR Sampler, data form (ODE-2)",
             "MR clip+start": "MR Sampler, data form, x0_hat clipped, t_start 69.17, t_min 3 (the default before t_min)",
             "MR auto": "MR Sampler, data form + noise-network defaults (mrlight's default for this checkpoint: "
                        "clipped, t_start 69.17, t_min 16)"}
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (1 + len(nfes)) + "|"]
    for form, name in names.items():
        lines.append(f"| {name} | " + " | ".join(cell(r[f"{form}@{n}"]) for n in nfes) + " |")
    post = r["posterior@100"]
    lines.append(f"| IR-SDE posterior sampling | NFE 100: {cell(post)} | | | |")
    lines += ["", "Bars of issue 16 (the default sampler for this checkpoint against posterior@100):", ""]
    for n, limit in ((10, 0.1), (5, 0.3)):
        d = r[f"MR auto@{n}"]["psnr"] - post["psnr"]
        lines.append(f"- NFE {n}: PSNR {d:+.2f} dB (bar: >= -{limit}): **{'met' if d >= -limit else 'not met'}**")
    for n in (5, 10):
        q = r[f"MR auto@{n}"]["swd"] / post["swd"]
        lines.append(f"- swd at NFE {n}: {q:.2f} x posterior@100's (bar: <= 1.10): "
                     f"**{'met' if q <= 1.10 else 'not met'}**")
    lines.append(f"- posterior@100: {post['psnr']:.2f} dB (bar: >= 27): **{'met' if post['psnr'] >= 27 else 'not met'}**")
    return lines


def x0_error(path: Path, lq, gt, draws: int, seed: int) -> list[dict]:
    """Per t (X0_ERROR_TIMES values from T to 1): mean |x0_hat - x0|, the same clipped to [0, 1], and
    mean |eps_hat - eps| at x_t = mu + alpha (x0 - mu) + sigma_bar z; the same z for every network."""
    from mrlight.sampling.common import Denoiser

    net, sde, prediction, _ = load(path)
    rows = []
    for t in torch.linspace(float(sde.T), 1.0, X0_ERROR_TIMES, dtype=torch.float64).tolist():
        den = Denoiser(net, lq, sde, prediction)
        acc = dict(x0=0.0, clip=0.0, eps=0.0)
        for d in range(draws):
            z = torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed + 1000 * d))
            x_t = sde.q_sample(gt, lq, torch.tensor(t, dtype=torch.float64), z)
            out = den(x_t, t, 0)
            x0, eps = den.data(out, x_t, t), den.noise(out, x_t, t)
            acc["x0"] += (x0 - gt).abs().mean().item() / draws
            acc["clip"] += (x0.clamp(0, 1) - gt).abs().mean().item() / draws
            acc["eps"] += (eps - z).abs().mean().item() / draws
        a, sb = den.schedule_at(t)
        rows.append(dict(t=t, alpha=a, sb_over_a=sb / a, sigma_bar=sb, dropped=a * (gt - lq).abs().mean().item(), **acc))
    return rows


def x0_error_report(results: dict[str, tuple[str, list[dict]]], lq, gt, a, invoked: str, started: str) -> list[str]:
    """The table (one column group per checkpoint) and docs/img/<name>.png."""
    from matplotlib.figure import Figure

    names = list(results)
    first = results[names[0]][1]
    input_err = (lq - gt).abs().mean().item()
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {started} at the start, {load_average()} at the end",
             f"- {len(lq)} center crops of {a.crop} px of CBSD68, sigma 25; x_t = mu + alpha (x0 - mu) + sigma_bar z, "
             f"{a.draws} draws of z per t (seeds {a.seed} + 1000 k, the same for every network)",
             f"- Cells: mean |x0_hat - x0| (clipped to [0, 1]) / mean |eps_hat - eps|; the noisy input's |mu - x0| is "
             f"{input_err:.4f}; `alpha |x0-mu|` is the term a start at t_start = t drops from the marginal", "",
             "| t | alpha | sigma_bar/alpha | alpha abs(x0-mu) | " + " | ".join(
                 f"{n} ({results[n][0]})" for n in names) + " |",
             "|---" * (4 + len(names)) + "|"]
    for i, r in enumerate(first):
        cells = " | ".join(f"{results[n][1][i]['x0']:.4f} ({results[n][1][i]['clip']:.4f}) / {results[n][1][i]['eps']:.4f}"
                           for n in names)
        lines.append(f"| {r['t']:.1f} | {r['alpha']:.4f} | {r['sb_over_a']:.3f} | {r['dropped']:.4f} | {cells} |")
    fig = Figure(figsize=(10.5, 4.8), dpi=100)
    ax = fig.subplots()
    ts = [r["t"] for r in first]
    for n in names:
        rows = results[n][1]
        line, = ax.plot(ts, [r["x0"] for r in rows], "-o" if results[n][0] == "noise" else "-s", ms=3,
                        label=f"{n} ({results[n][0]})")
        if results[n][0] == "noise":  # a data network's estimate hardly leaves [0, 1]
            ax.plot(ts, [r["clip"] for r in rows], "--", color=line.get_color(), lw=1, label=f"{n}, clipped to [0, 1]")
    ax.axhline(input_err, color="gray", ls="--", lw=1, label="noisy input |mu - x0|")
    ax.plot(ts, [r["dropped"] for r in first], ":", color="black", lw=1, label="alpha(t) |x0 - mu| (dropped by t_start)")
    t_start = noise_network_defaults("noise", MRSDE())["t_start"]
    ax.axvline(t_start, color="black", lw=0.8, alpha=0.5, label=f"t_start of noise_network_defaults ({t_start:g})")
    ax.set_yscale("log")
    ax.set_xlabel("t (grid units; T = 100 is the prior)")
    ax.set_ylabel("mean |x0_hat(t) - x0|")
    ax.set_title(f"data estimate error along t: {len(lq)} CBSD68 crops {a.crop}px, sigma 25", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(a.img_dir / f"{a.name or 'noise_x0_error'}.png")
    return lines


def remedies_table(rows: list[dict], keys: list[str], lq_row: dict) -> list[str]:
    """Rows: remedy@nfe; columns: checkpoints. Cells: PSNR (paired per-image difference to default@NFE,
    mean +- standard error) / SSIM / swd; the last row of each checkpoint's posterior@100 is the reference."""
    cols = [f"{r['run']} {r['step']}" for r in rows]
    lines = ["| remedy @ NFE | " + " | ".join(cols) + " |", "|---" * (1 + len(cols)) + "|",
             "| noisy input | " + " | ".join(f"{lq_row['psnr']:.2f} / {lq_row['ssim']:.3f} / {lq_row['swd']:.1f}"
                                            for _ in cols) + " |"]
    for k in keys:
        nfe = k.rsplit("@", 1)[1]
        cells = []
        for r in rows:
            v, base = r[k], r.get(f"default@{nfe}")
            paired = ""
            if base is not None and k != f"default@{nfe}" and not k.startswith("posterior"):
                d = v["psnr_per_image"] - base["psnr_per_image"]
                se = d.std().item() / len(d) ** 0.5 if len(d) > 1 else float("nan")
                paired = f" ({d.mean().item():+.2f} +- {se:.2f})"
            cells.append(f"{v['psnr']:.2f}{paired} / {v['ssim']:.3f} / {v['swd']:.1f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def tradeoff_plot(result: dict, path: Path, title: str) -> bool:
    """PSNR against swd for the (g) t_min sweep at NFE 5 and 10, ODE-1 and the posterior baselines, one
    checkpoint: where each sampler sits between distortion and realism. False if the rows are missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = {n: sorted((float(re.search(r"t_min=([0-9.]+)", k).group(1)), v) for k, v in result.items()
                       if k.startswith("(g) t_min=") and k.endswith(f"@{n}")) for n in (5, 10)}
    base = {n: result.get(f"clip + t_start@{n}") for n in (5, 10)}
    if not all(sweep.values()) or not all(base.values()) or "posterior@100" not in result:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for n, marker in ((5, "o"), (10, "s")):
        pts = [(3.0, base[n])] + sweep[n]
        ax.plot([v["swd"] for _, v in pts], [v["psnr"] for _, v in pts], marker=marker, ms=4,
                label=f"MR ODE-2 @{n}, t_min 3 ... {pts[-1][0]:g} (clip + t_start)")
        for tm, v in pts:
            ax.annotate(f"{tm:g}", (v["swd"], v["psnr"]), fontsize=7, xytext=(3, -8), textcoords="offset points")
        if f"(f) order 1 + clip + t_start@{n}" in result:
            v = result[f"(f) order 1 + clip + t_start@{n}"]
            ax.plot([v["swd"]], [v["psnr"]], marker, color="tab:red", mfc="none", label=f"MR ODE-1 @{n}, t_min 3")
    for n, color in ((20, "0.6"), (100, "black")):
        if f"posterior@{n}" in result:
            v = result[f"posterior@{n}"]
            ax.plot([v["swd"]], [v["psnr"]], "*", ms=12, color=color, label=f"posterior@{n}")
    post = result["posterior@100"]
    ax.axhline(post["psnr"] - 0.1, color="black", lw=0.6, ls=":", label="posterior@100 - 0.1 dB")
    ax.axvline(post["swd"] * 1.1, color="black", lw=0.6, ls="--", label="1.1 x posterior@100's swd")
    ax.set_xlabel("swd (x1e3, lower is more realistic)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="", help="comma-separated run folders (step_<N>.ckpt files)")
    p.add_argument("--ckpt", type=Path, action="append", default=[],
                   help="a checkpoint (repeatable; --table2 uses the first)")
    p.add_argument("--table2", action="store_true", help="the MR Sampler paper's Table 2 on --ckpt")
    p.add_argument("--x0-error", action="store_true", help="|x0_hat(t) - x0| along t per checkpoint (issue 16)")
    p.add_argument("--remedies", action="store_true", help="the REMEDIES rows per checkpoint (issue 16)")
    p.add_argument("--draws", type=int, default=2, help="noise draws per t (--x0-error)")
    p.add_argument("--name", default=None)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--only", default=None, help="only the rows whose label@nfe matches this regular expression")
    p.add_argument("--skip", type=int, default=0,
                   help="leave out the first K test images (held-out evaluation: the remedies were chosen on the first 8)")
    p.add_argument("--steps", default=None, help="only these steps (comma-separated)")
    p.add_argument("--thresholding", action="store_true", help="dynamic thresholding of x0_hat (data form rows)")
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true",
                   help="re-evaluate everything (default: reuse <out>/<name>.cache.json for unchanged checkpoints)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    name = a.name or ("noise_table2" if a.table2 else "noise_x0_error" if a.x0_error else
                      "noise_remedies" if a.remedies else "noise_curve")
    invoked = "python benchmarks/noise_curve.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    load_start, t0 = load_average(), time.perf_counter()
    a.images += a.skip
    lq, gt, names = test_subset(a, "denoise", 42)
    lq, gt, names, a.images = lq[a.skip:], gt[a.skip:], names[a.skip:], a.images - a.skip
    lq_row = input_metrics(lq, gt)
    samplers = TABLE2 if a.table2 else REMEDIES if a.remedies else SAMPLERS
    if a.only:
        samplers = [row for row in samplers if re.search(a.only, f"{row[0]}@{row[1]}")]
    keys = [f"{label}@{nfe}" for label, nfe, _ in samplers]
    targets = [(path.stem, 0, path) for path in (a.ckpt[:1] if a.table2 else a.ckpt)]
    only = {int(s) for s in a.steps.split(",")} if a.steps else None
    for run in filter(None, a.runs.split(",")):
        targets += [(Path(run).name, step, path) for step, path in checkpoints(Path(run)) if not only or step in only]
    if not targets:
        sys.exit("nothing to evaluate: give --runs with step_<N>.ckpt files or --ckpt")
    if a.x0_error:
        results = {}
        for run, step, path in targets:
            label = f"{run} {step}" if step else run
            results[label] = (load(path)[2], x0_error(path, lq, gt, a.draws, a.seed))
            print(f"{label}: " + ", ".join(f"t={r['t']:.0f} {r['x0']:.3f}" for r in results[label][1]), flush=True)
        a.name = name
        lines = x0_error_report(results, lq, gt, a, invoked, load_start)
        (a.out / f"{name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    rows, curves = [], {}
    cache_file = a.out / f"{name}.cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() and not a.no_cache else {}
    for run, step, path in targets:
        start = time.perf_counter()
        result = evaluate(path, samplers, lq, gt, a.seed, cache=cache)
        cache_file.write_text(json.dumps(cache))
        rows.append({"run": run, "step": step, **result})
        curves.setdefault(run, ([], lq_row))[0].append((step, result))
        print(f"{run} step {step} ({time.perf_counter() - start:.0f} s): "
              + ", ".join(f"{k} {v['psnr']:.2f}/{v['swd']:.1f}" for k, v in result.items()), flush=True)
    with open(a.out / f"{name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "step", "sampler", *METRICS])
        w.writerow(["noisy input", "", "", *(lq_row[m] for m in METRICS)])
        for r in rows:
            for k in keys:
                w.writerow([r["run"], r["step"], k, *(r[k][m] for m in METRICS)])
    gap = "MR data@10" in keys and "posterior@100" in keys
    body = (remedies_table(rows, keys, lq_row) if a.remedies else table2(rows[0]) if a.table2
            else table(rows, keys, lq_row, gap))
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {load_start} at the start, {load_average()} at the end; "
             f"evaluation took {(time.perf_counter() - t0) / 60:.1f} min",
             f"- Test crops: {len(names)} center crops of {a.crop} px of CBSD68 ({', '.join(names)}), sigma 25; "
             f"same prior x_T (seed {a.seed}+i per image) and SDE noise (seed {a.seed + 10000}) for every row",
             "- Cells: PSNR (dB) / SSIM / swd (x1e3, lower is more realistic)"
             + ("; (PSNR difference to default@same NFE, per image: mean +- standard error)" if a.remedies else ""),
             "",
             *body]
    (a.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.remedies and len(rows) == 1 and tradeoff_plot(rows[0], a.img_dir / f"{name}.png",
                                                      f"{rows[0]['run']}: {len(names)} CBSD68 crops {a.crop}px, sigma 25"):
        print(f"wrote {a.img_dir / f'{name}.png'}")
    if not (a.table2 or a.remedies) and any(len(points) > 1 for points, _ in curves.values()):
        plot(curves, a.img_dir / f"{name}.png", f"noise-prediction denoiser: {len(names)} CBSD68 crops {a.crop}px, "
                                                  f"sigma 25, same prior per row")


if __name__ == "__main__":
    main()
