"""Distance to the true law for every sampler configuration, with a perfect network.

The analytic problem of `mrlight.analytic`: every pixel's residual x0 - mu is an independent draw
from a 3-component Gaussian mixture, so E[x0 | x_t] is exact and a sampler's output can be
compared with the true law by the 1-D Wasserstein distance W1 over many pixels (DESIGN section 5).
Rows: mrlight's MR Sampler (every solver, order, parameterization, time schedule including the
optimized steps, without and with the UniC corrector "mr+unic"), the official
MR Sampler's rules (benchmarks/reference_samplers.py, on DA-CLIP's grid), and the baselines
(posterior, euler, heun). Columns: NFE.

    python benchmarks/sampler_quality.py            # 60k pixels, about 15 minutes on one CPU core
    python benchmarks/sampler_quality.py --quick    # 20k pixels, NFE 5/10/20 only
    python benchmarks/sampler_quality.py --nfe 5 10 20 --no-ablation   # the bars: 60k pixels, NFE 5/10/20,
                                                    # posterior@100, and a second held-out law

Writes benchmarks/out/sampler_quality.csv and prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_samplers import DaclipGrid, official_mr_sample  # noqa: E402

from mrlight.analytic import GaussianMixture, Oracle, wasserstein1  # noqa: E402
from mrlight.sampling import sample  # noqa: E402
from mrlight.sampling.schedules import T_MIN_SCHEDULES  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

SOLVER_ORDERS = [("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2)]
MR_SCHEDULES = ["linspace", "uniform-lambda", "karras-t", "karras-t-tmin", "quadratic-t", "optimized"]
# A second law for the held-out check (neither this nor GaussianMixture() is a calibration law of
# the optimized steps, mrlight.sampling.optimize.calibration_laws).
SECOND_LAW = dict(weights=[0.7, 0.3], means=[0.05, -0.1], stds=[0.02, 0.1])
OFFICIAL_SCHEDULES = ["linspace", "uniform-lambda", "karras-t"]  # official name of uniform-lambda: linear-lambda


def run_all(pixels: int, nfes: list[int], seed: int, ablation: bool):
    sde, law = MRSDE(), GaussianMixture()
    grid = DaclipGrid()
    mu = torch.full((pixels // 100, 1, 10, 10), 0.5)
    rows = []

    def record(family, cfg, nfe, out, secs):
        # Outputs are clipped to [0, 1] as images are saved (the official code clips too); it only
        # matters for diverged runs, since the true law stays inside [0.2, 0.85].
        w = wasserstein1((out.clamp(0, 1) - mu).double(), law)
        rows.append(dict(family=family, **cfg, nfe=nfe, w1=w, seconds=secs))

    def gen():
        return torch.Generator().manual_seed(seed)

    for nfe in nfes:
        t0 = time.perf_counter()
        for solver, order in SOLVER_ORDERS:
            for param in ("data", "noise"):
                for sched in MR_SCHEDULES:
                    for corrector in ("none", "unic"):
                        name = "mr" if corrector == "none" else "mr+unic"
                        cfg = dict(sampler=name, solver=solver, order=order, parameterization=param, schedule=sched)
                        t = time.perf_counter()
                        out = sample(Oracle(law, sde), mu, sde, sampler="mr", nfe=nfe, solver=solver, order=order,
                                     parameterization=param, time_schedule=sched, corrector=corrector, generator=gen())
                        record("mrlight", cfg, nfe, out, time.perf_counter() - t)
                for sched in OFFICIAL_SCHEDULES:
                    cfg = dict(sampler="mr", solver=solver, order=order, parameterization=param, schedule=sched)
                    t = time.perf_counter()
                    out = official_mr_sample(Oracle(law, sde, schedule=grid.at), mu, grid, nfe, solver=solver,
                                             order=order, parameterization=param, schedule=sched, generator=gen())
                    record("official", cfg, nfe, out, time.perf_counter() - t)
        for sampler, solver in (("posterior", "sde"), ("euler", "sde"), ("euler", "ode"), ("heun", "ode")):
            n = nfe if sampler != "heun" else nfe - (1 - nfe % 2)
            cfg = dict(sampler=sampler, solver=solver, order="", parameterization="", schedule="linspace")
            t = time.perf_counter()
            extra = {"solver": solver} if sampler == "euler" else {}  # posterior and heun take no solver option
            out = sample(Oracle(law, sde), mu, sde, sampler=sampler, nfe=n, generator=gen(), **extra)
            record("baseline", cfg, nfe, out, time.perf_counter() - t)
        if ablation and nfe <= 20:
            variants = [dict(t_min=1.0), dict(t_min=2.0), dict(t_min=5.0), dict(lower_order_final=False),
                        dict(final_order=1)]
            for order in (2, 3):
                for param in ("data", "noise"):
                    for sched in ("linspace", "uniform-lambda", "karras-t-tmin"):
                        for v in variants:
                            if "t_min" in v and sched not in T_MIN_SCHEDULES:  # refused: t_min is unused there
                                continue
                            name = "mr " + " ".join(f"{k}={val}" for k, val in v.items())
                            cfg = dict(sampler=name, solver="ode", order=order, parameterization=param, schedule=sched)
                            t = time.perf_counter()
                            out = sample(Oracle(law, sde), mu, sde, nfe=nfe, solver="ode", order=order,
                                         parameterization=param, time_schedule=sched, generator=gen(), **v)
                            record("ablation", cfg, nfe, out, time.perf_counter() - t)
            for order in (2, 3):
                for sched in ("karras-t-tmin", "optimized"):
                    for variant in ("bh1", "exact"):
                        cfg = dict(sampler=f"mr+unic unic_variant={variant}", solver="ode", order=order,
                                   parameterization="data", schedule=sched)
                        t = time.perf_counter()
                        out = sample(Oracle(law, sde), mu, sde, nfe=nfe, order=order, time_schedule=sched,
                                     corrector="unic", unic_variant=variant, generator=gen())
                        record("ablation", cfg, nfe, out, time.perf_counter() - t)
        print(f"  NFE {nfe}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    floor = wasserstein1(law.sample((pixels,), torch.Generator().manual_seed(seed + 1)), law)
    if 100 not in nfes:  # the reference point of the bars
        out = sample(Oracle(law, sde), mu, sde, sampler="posterior", nfe=100, generator=gen())
        record("baseline", dict(sampler="posterior", solver="sde", order="", parameterization="", schedule="linspace"),
               100, out, 0.0)
    return rows, floor


HELD_OUT = [dict(order=o, parameterization=p, time_schedule=s, corrector=c)
            for o in (2, 3) for p in ("data", "noise") for s in ("karras-t-tmin", "optimized") for c in ("none", "unic")]


def held_out_law(pixels: int, seed: int):
    """The bars on a second law: best MR configurations at NFE 5/10 vs posterior@100 and the floor."""
    sde, law = MRSDE(), GaussianMixture(**SECOND_LAW)
    mu = torch.full((pixels // 100, 1, 10, 10), 0.5)

    def w1(**kw):
        out = sample(Oracle(law, sde), mu, sde, generator=torch.Generator().manual_seed(seed), **kw)
        return wasserstein1((out.clamp(0, 1) - mu).double(), law)

    rows = [dict(cfg, nfe=n, w1=w1(nfe=n, **cfg)) for n in (5, 10) for cfg in HELD_OUT]
    post = w1(sampler="posterior", nfe=100)
    floor = wasserstein1(law.sample((pixels,), torch.Generator().manual_seed(seed + 1)), law)
    return rows, post, floor


# The bars compare two noisy estimates (W1 over a finite sample; posterior sampling is stochastic), so
# they are also checked as means over several seeds for fixed candidate configurations.
BAR_CANDIDATES = [dict(order=o, time_schedule=s, corrector="unic") for o in (2, 3) for s in ("optimized", "karras-t-tmin")]


def _label(cfg: dict) -> str:
    return f"ODE-{cfg['order']} data {cfg['time_schedule']} + UniC"


def seed_averaged_bars(law_kwargs: dict, pixels: int, seeds: int) -> dict:
    """Mean W1 over `seeds` seeds: {(nfe, label): ...} for the candidates (ODE, data form) at NFE 5
    and 10, plus "posterior@100" and "floor" (an exact sample of the same size)."""
    sde, law = MRSDE(), GaussianMixture(**law_kwargs)
    mu = torch.full((pixels // 100, 1, 10, 10), 0.5)
    means: dict = {}

    def add(key, value):
        means[key] = means.get(key, 0.0) + value / seeds

    for seed in range(seeds):
        def w1(**kw):
            out = sample(Oracle(law, sde), mu, sde, generator=torch.Generator().manual_seed(seed), **kw)
            return wasserstein1((out.clamp(0, 1) - mu).double(), law)
        for n in (5, 10):
            for cfg in BAR_CANDIDATES:
                add((n, _label(cfg)), w1(nfe=n, **cfg))
        add("posterior@100", w1(sampler="posterior", nfe=100))
        add("floor", wasserstein1(law.sample((pixels,), torch.Generator().manual_seed(seed + 1)), law))
    return means


def print_seed_averaged(name: str, means: dict, seeds: int):
    print(f"\n### Bars on {name}, mean over seeds 0-{seeds - 1}\n")
    print("| configuration | NFE 5 | NFE 10 |\n|---|---|---|")
    for cfg in BAR_CANDIDATES:
        print(f"| {_label(cfg)} | {means[(5, _label(cfg))]:.4f} | {means[(10, _label(cfg))]:.4f} |")
    print(f"| posterior (IR-SDE) @ NFE 100 | {means['posterior@100']:.4f} | |")
    print(f"| floor (exact sample) | {means['floor']:.4f} | |")
    best = {n: min((means[(n, _label(c))], _label(c)) for c in BAR_CANDIDATES) for n in (5, 10)}
    print_bars(f"{name} (seed means)", best, means["posterior@100"], means["floor"], heading=False)


def print_bars(name: str, best: dict, post100: float, floor: float, heading: bool = True):
    if heading:
        print(f"\n### Bars on {name}\n")
    print(f"\n- NFE 5: best W1 {best[5][0]:.4f} ({best[5][1]}) vs posterior at NFE 100 {post100:.4f}: "
          + ("met" if best[5][0] <= post100 else "NOT met"))
    print(f"- NFE 10: best W1 {best[10][0]:.4f} ({best[10][1]}) vs 2 x floor {2 * floor:.4f}: "
          + ("met" if best[10][0] <= 2 * floor else "NOT met"))


def key(r):
    return (r["family"], r["sampler"], r["solver"], str(r["order"]), r["parameterization"], r["schedule"])


def pivot(rows, nfes, families):
    table = {}
    for r in rows:
        if r["family"] in families:
            table.setdefault(key(r), {})[r["nfe"]] = r["w1"]
    return table


def print_table(title, table, nfes, fmt="{:.4f}"):
    print(f"\n### {title}\n")
    print("| family | sampler | solver | order | param | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(nfes))
    for k, v in table.items():
        cells = [fmt.format(v[n]) if n in v and v[n] < 10 else ("diverged" if n in v else "") for n in nfes]
        print("| " + " | ".join(k) + " | " + " | ".join(cells) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20k pixels, NFE 5/10/20")
    p.add_argument("--pixels", type=int, default=None)
    p.add_argument("--nfe", type=int, nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=5, help="seeds of the seed-averaged bar check")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--png", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img" / "quality_vs_nfe.png")
    a = p.parse_args(argv)
    pixels = a.pixels or (20_000 if a.quick else 60_000)
    nfes = a.nfe or ([5, 10, 20] if a.quick else [5, 10, 20, 50, 100])
    torch.set_num_threads(a.threads)  # one thread: the oracle is many small ops; threads oversubscribe
    print(f"W1 to the true law, {pixels} pixels, seed {a.seed}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    rows, floor = run_all(pixels, nfes, a.seed, not a.no_ablation)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "sampler_quality.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        w.writerow(dict(family="floor", sampler="exact sample", solver="", order="", parameterization="", schedule="",
                        nfe="", w1=floor, seconds=""))

    print(f"W1 (lower is better) over {pixels} pixels; an exact sample of that size scores {floor:.4f} (the floor).")
    print_table("mrlight MR Sampler", pivot(rows, nfes, {"mrlight"}), nfes)
    print_table("Official MR Sampler rules (DA-CLIP grid)", pivot(rows, nfes, {"official"}), nfes)
    print_table("Baselines", pivot(rows, nfes, {"baseline"}), nfes)
    if any(r["family"] == "ablation" for r in rows):
        print_table("Ablation (ODE; defaults: t_min=3, lower_order_final=True, final_order=order)", pivot(rows, nfes, {"ablation"}), nfes)

    # mrlight against the official rules, config by config, at the NFE the issue names.
    mine, theirs = pivot(rows, nfes, {"mrlight"}), pivot(rows, nfes, {"official"})
    print("\n### mrlight vs official, same configuration\n")
    print("| NFE | configurations | mrlight better or equal | margin allowed by noise (2 x floor) | worst ratio mrlight/official |")
    print("|---|---|---|---|---|")
    for n in [n for n in (5, 10, 20, 50, 100) if n in nfes]:
        pairs = [(mine[("mrlight",) + k[1:]][n], v[n]) for k, v in theirs.items() if n in v]
        wins = sum(m <= o for m, o in pairs)
        within = sum(m <= o + 2 * floor for m, o in pairs)
        worst = max(m / o for m, o in pairs)
        print(f"| {n} | {len(pairs)} | {wins} | {within} | {worst:.2f} |")
    print("\nConfigurations (NFE <= 20) where mrlight is worse than the official rules by more than 2 x floor:\n")
    print("| solver | order | param | schedule | NFE | mrlight W1 | official W1 | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    # a run farther from the law than returning mu itself (x - mu = 0) carries no information about it
    trivial = wasserstein1(torch.zeros(pixels, dtype=torch.float64), GaussianMixture())
    for k, v in theirs.items():
        for n in [n for n in nfes if n <= 20]:
            m = mine[("mrlight",) + k[1:]][n]
            if m > v[n] + 2 * floor:
                verdict = f"both diverged (> {trivial:.4f}, returning mu)" if v[n] > trivial else "official better"
                print("| " + " | ".join(k[2:]) + f" | {n} | {m:.4f} | {v[n]:.4f} | {verdict} |")
    base = pivot(rows, nfes + [100], {"baseline"})
    post100 = base.get(("baseline", "posterior", "sde", "", "", "linspace"), {}).get(100)
    if 5 in nfes and 10 in nfes:
        best = {n: min(((v[n], ", ".join(k[1:])) for k, v in mine.items() if n in v)) for n in (5, 10)}
        print_bars("the benchmark law GaussianMixture() (not a calibration law)", best, post100, floor)
        held, post_b, floor_b = held_out_law(pixels, a.seed)
        print(f"\n### Second held-out law {SECOND_LAW}\n")
        print("| order | param | schedule | corrector | NFE | W1 |\n|---|---|---|---|---|---|")
        for r in held:
            print(f"| {r['order']} | {r['parameterization']} | {r['time_schedule']} | {r['corrector']} | {r['nfe']} | {r['w1']:.4f} |")
        best_b = {n: min((r["w1"], f"{r['order']}, {r['parameterization']}, {r['time_schedule']}, {r['corrector']}")
                         for r in held if r["nfe"] == n) for n in (5, 10)}
        print_bars("the second held-out law", best_b, post_b, floor_b)
        for name, law_kwargs in (("the benchmark law", {}), ("the second held-out law", SECOND_LAW)):
            print_seed_averaged(name, seed_averaged_bars(law_kwargs, pixels, a.seeds), a.seeds)
    for n in (5, 10, 20):
        if n in nfes:
            best = min(((v[n], k) for k, v in mine.items() if n in v), key=lambda x: x[0])
            print(f"\nBest mrlight configuration at NFE {n}: W1 {best[0]:.4f} ({', '.join(best[1][1:])})"
                  + (f"; posterior at NFE 100: {post100:.4f}" if post100 else ""))
    from plot_quality import plot
    png = plot(rows + [dict(family="floor", sampler="", solver="", order="", parameterization="", schedule="",
                            nfe="", w1=floor, seconds="")], a.png)
    print(f"\nCSV: {a.out / 'sampler_quality.csv'}; plot: {png}")


if __name__ == "__main__":
    main()
