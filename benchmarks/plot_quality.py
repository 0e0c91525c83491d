"""Plot W1-to-the-true-law against NFE from benchmarks/out/sampler_quality.csv.

One panel per MR solver (ODE orders 1-3, SDE orders 1-2), a line per parameterization and time
schedule for mrlight (solid; with the UniC corrector dash-dot, optimized and karras-t steps only)
and the official rules (dashed), the baselines in grey, and a
horizontal line at posterior sampling's W1 at NFE 100; a dot marks the first NFE at which each
MR configuration reaches it. Called by sampler_quality.py; also runs alone:

    python benchmarks/plot_quality.py [CSV] [PNG]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_PNG = HERE.parent / "docs" / "img" / "quality_vs_nfe.png"
COLORS = {"linspace": "tab:blue", "uniform-lambda": "tab:orange", "karras-t": "tab:olive", "karras-t-tmin": "tab:green", "quadratic-t": "tab:purple",
          "optimized": "tab:brown"}


def load(path: Path):
    with open(path) as f:
        return [r for r in csv.DictReader(f)]


def plot(rows, png: Path = DEFAULT_PNG, title_suffix: str = "") -> Path:
    floor = next((float(r["w1"]) for r in rows if r["family"] == "floor"), None)
    rows = [r for r in rows if r["family"] != "floor"]
    series = {}
    for r in rows:
        k = (r["family"], r["sampler"], r["solver"], str(r["order"]), r["parameterization"], r["schedule"])
        series.setdefault(k, []).append((int(r["nfe"]), min(float(r["w1"]), 1.0)))
    post = dict(series.get(("baseline", "posterior", "sde", "", "", "linspace"), []))
    target = post.get(100)
    panels = [("ode", "1"), ("ode", "2"), ("ode", "3"), ("sde", "1"), ("sde", "2")]
    fig, grid = plt.subplots(2, 3, figsize=(13, 8.5), sharey=True)
    axes = grid.flatten()
    for ax, (solver, order) in zip(axes, panels):
        for (fam, sampler, sv, od, param, sched), pts in series.items():
            if fam == "baseline":
                pts.sort()
                ax.plot(*zip(*pts), color="0.5", lw=1, ls={"posterior": "-", "euler": ":", "heun": "-."}[sampler],
                        label=f"{sampler}-{sv}" if (solver, order) == ("ode", "1") else None)
                continue
            if fam not in ("mrlight", "official") or (sv, od) != (solver, order):
                continue
            unic = sampler == "mr+unic"
            if unic and sched not in ("optimized", "karras-t-tmin"):
                continue  # UniC on the two best schedules only, for legibility
            pts.sort()
            ls = (0, (4, 1, 1, 1)) if unic else ("-" if fam == "mrlight" else "--")
            fam = "mrlight+UniC" if unic else fam
            marker = "o" if param == "data" else "s"
            ax.plot(*zip(*pts), ls=ls, marker=marker, ms=3, color=COLORS.get(sched, "k"), lw=0.8 if fam == "official" else 1.2,
                    alpha=0.6 if fam == "official" else 1.0, label=f"{fam} {param} {sched}" if (solver, order) == ("ode", "3") else None)
            if fam.startswith("mrlight") and target is not None:
                reach = [n for n, w in pts if w <= target]
                if reach:
                    ax.plot([min(reach)], [dict(pts)[min(reach)]], "o", ms=9, mfc="none", mec="red")
        if target is not None:
            ax.axhline(target, color="red", lw=0.8)
        if floor is not None:
            ax.axhline(floor, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"MR {solver.upper()} order {order}")
        ax.set_xlabel("NFE")
        ax.set_xticks([5, 10, 20, 50, 100])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    for ax in (axes[0], axes[3]):
        ax.set_ylabel("W1 to the true law (clipped at 1)")
    axes[0].legend(fontsize=7, loc="lower left", title="baselines", title_fontsize=7)
    handles, labels = axes[2].get_legend_handles_labels()
    axes[5].axis("off")
    axes[5].legend(handles, labels, fontsize=7, loc="center", title="solid: mrlight, dash-dot: mrlight + UniC,\ndashed: official rules; "
                   "circles: data form, squares: noise form", title_fontsize=7)
    fig.suptitle("Perfect network, Gaussian-mixture law. Red line: posterior sampling at NFE 100; red circle: first NFE\n"
                 "at which an mrlight configuration reaches it; dotted: W1 of an exact sample (noise floor)" + title_suffix,
                 fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


if __name__ == "__main__":
    csv_path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out" / "sampler_quality.csv"
    png_path = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_PNG
    print(plot(load(csv_path), png_path))
