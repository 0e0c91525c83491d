"""Distillation on the analytic problem: W1 to the true law of a 1-, 2- and 4-call student.

The teacher is the perfect network of `mrlight.analytic` (the exact E[x0 | x_t]) for a law of
x0 - mu that nothing in the project was tuned on (`LAW` below: four components, where the benchmark
and test laws have two or three, and the stored optimized steps were calibrated on three others).
The student is a small per-pixel network (`PixelMLP`: an MLP over (x_t - mu, mu, sin/cos of t),
three hidden layers of 64, ReLU, 9.1k parameters), trained from scratch by `mrlight.distill.distill`
(Adam, cosine decay from lr 1e-2; batches of 32 x 16 x 16 pixels with mu uniform in [0.35, 0.55]).
W1 over 60k pixels of fresh mu and x_T, beside the MR Sampler (defaults) at NFE 5 and 10, IR-SDE
posterior sampling at NFE 100 and an exact sample of the same size (the floor), all on the same
mu and x_T per seed.

    python benchmarks/distill_analytic.py                 # everything (several hours on one core)
    python benchmarks/distill_analytic.py --part compare  # the method comparison (budget 1000)
    python benchmarks/distill_analytic.py --part budget   # default method, calls 1/2/4, budgets, seeds
    python benchmarks/distill_analytic.py --quick         # a few minutes: budget 150, one seed
    python benchmarks/distill_analytic.py --report        # rewrite the markdown from the JSONL only

Every finished run is appended to benchmarks/out/distill_analytic.jsonl (a rerun skips runs already
there, so an interrupted run resumes), and the tables go to docs/results/distill_analytic.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mrlight.analytic import GaussianMixture, Oracle, wasserstein1  # noqa: E402
from mrlight.distill import distill, student_times  # noqa: E402
from mrlight.sampling import sample  # noqa: E402
from mrlight.sampling.distilled import sample_distilled  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

# Held out: not GaussianMixture() (sampler_quality), not SECOND_LAW (sampler_quality, official_cells),
# not the test laws (test_sampler_v2, test_distill), not a calibration law of the optimized steps.
LAW_KW = dict(weights=[0.15, 0.35, 0.3, 0.2], means=[-0.22, -0.06, 0.07, 0.2], stds=[0.03, 0.035, 0.03, 0.045])
LAW = GaussianMixture(**LAW_KW)
SDE = MRSDE()  # IR-SDE's defaults: T = 100, max_sigma = 50, cosine, eps = 0.005
BATCH, SIDE = 32, 16  # 8192 pixels per step
PIXELS = 60_000
LR = 1e-2
OUT = ROOT / "benchmarks" / "out" / "distill_analytic.jsonl"
DOC = ROOT / "docs" / "results" / "distill_analytic.md"


class PixelMLP(nn.Module):
    """Per-pixel student: MLP over ((x_t - mu) / 0.2, (mu - 0.45) / 0.1, sin/cos(2^j pi t / T)); x0 = mu + 0.2 out."""

    def __init__(self, hidden: int = 64, layers: int = 3, freqs: int = 4, scale: float = 0.2, residual: bool = True):
        super().__init__()
        self.residual = residual  # False: the raw MLP output (a noise-predicting network)
        self.register_buffer("freqs", 2.0 ** torch.arange(freqs) * math.pi)
        self.scale = scale
        dims = [2 + 2 * freqs] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        mods.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x, mu, t):
        b, _, h, w = x.shape
        ang = (t.float() / SDE.T)[:, None] * self.freqs
        emb = torch.cat([ang.sin(), ang.cos()], 1)[:, :, None, None].expand(b, -1, h, w)
        feats = torch.cat([(x - mu) / self.scale, (mu - 0.45) / 0.1, emb], 1).permute(0, 2, 3, 1)
        out = self.net(feats).permute(0, 3, 1, 2)
        return mu + self.scale * out if self.residual else out


class TimedTeacher:
    """The oracle, timing its calls (the teacher's share of the wall-clock)."""

    def __init__(self):
        self.oracle, self.seconds = Oracle(LAW, SDE, "noise"), 0.0

    def __call__(self, x, mu, t):
        t0 = time.perf_counter()
        out = self.oracle(x, mu, t)
        self.seconds += time.perf_counter() - t0
        return out


def mu_fn(generator):
    return 0.35 + 0.2 * torch.rand(BATCH, 1, SIDE, SIDE, generator=generator)


def eval_set(seed: int):
    g = torch.Generator().manual_seed(1000 + seed)
    mu = 0.35 + 0.2 * torch.rand(PIXELS // 100, 1, 10, 10, generator=g)
    return mu, SDE.prior_sample(mu, g)


def w1(out, mu) -> float:
    return wasserstein1((out.clamp(0, 1) - mu).double(), LAW)


def references(seed: int) -> dict:
    """MR@5, MR@10 (defaults), posterior@100, the teacher's ODE (MR@20) and the floor, on eval seed `seed`."""
    mu, x_T = eval_set(seed)
    g = lambda: torch.Generator().manual_seed(2000 + seed)  # noqa: E731
    row = {}
    for name, kw in (("mr5", dict(nfe=5)), ("mr10", dict(nfe=10)), ("mr20", dict(nfe=20)),
                     ("posterior100", dict(sampler="posterior", nfe=100))):
        row[name] = w1(sample(Oracle(LAW, SDE), mu, SDE, x_T=x_T, generator=g(), **kw), mu)
    row["floor"] = wasserstein1(LAW.sample((PIXELS,), torch.Generator().manual_seed(3000 + seed)), LAW)
    return row


def run(method: str, calls: int, iterations: int, seed: int, **kw) -> dict:
    torch.manual_seed(seed)
    student = PixelMLP()
    teacher = TimedTeacher()
    t0 = time.perf_counter()
    # the student's output is x0 (PixelMLP: mu + 0.2 * MLP), whatever the teacher predicts
    D = distill(teacher, student, SDE, mu_fn, calls=calls, iterations=iterations, prediction="noise",
                generator=torch.Generator().manual_seed(seed), method=method, lr=kw.pop("lr", LR),
                student_prediction="data", **kw)
    secs = time.perf_counter() - t0
    mu, x_T = eval_set(seed)
    out = sample_distilled(D, mu, SDE, nfe=calls, x_T=x_T, generator=torch.Generator().manual_seed(2000 + seed))
    # distance to the teacher's own ODE solution from the same x_T (the map the ODE-step student imitates)
    ref = sample(Oracle(LAW, SDE), mu, SDE, nfe=20, x_T=x_T)
    t1 = time.perf_counter()
    sample_distilled(D, mu, SDE, nfe=calls, x_T=x_T)
    restore_ms = (time.perf_counter() - t1) * 1000
    return dict(w1=w1(out, mu), to_teacher=(out - ref).abs().mean().item(), train_seconds=secs,
                teacher_seconds=teacher.seconds, restore_ms_60k=restore_ms,
                times=[round(t, 4) for t in D.times.tolist()], step=D.step)


_TEACHERS: dict[int, PixelMLP] = {}


def trained_teacher(seed: int = 0, steps: int = 3000) -> PixelMLP:
    """An imperfect teacher: PixelMLP (raw output) trained with the noise objective on LAW (Adam 3e-3, cosine)."""
    if seed not in _TEACHERS:
        torch.manual_seed(100 + seed)
        net = PixelMLP(residual=False)
        g = torch.Generator().manual_seed(100 + seed)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            mu = mu_fn(g)
            x0 = mu + LAW.sample(mu.shape, g).float()
            t = SDE.T * torch.rand(mu.shape[0], generator=g)
            noise = torch.randn(mu.shape, generator=g)
            loss = (net(SDE.q_sample(x0, mu, t, noise=noise), mu, t) - noise).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        _TEACHERS[seed] = net.eval().requires_grad_(False)
    return _TEACHERS[seed]


def run_init(calls: int, iterations: int, seed: int, init: str, student_prediction: str, lr: float) -> dict:
    """Distil the trained noise teacher into a copy of itself (init="teacher") or a fresh network."""
    import copy
    teacher = trained_teacher()
    torch.manual_seed(seed)
    student = copy.deepcopy(teacher).requires_grad_(True) if init == "teacher" else PixelMLP(residual=False)
    t0 = time.perf_counter()
    D = distill(teacher, student, SDE, mu_fn, calls=calls, iterations=iterations, prediction="noise",
                generator=torch.Generator().manual_seed(seed), lr=lr, student_prediction=student_prediction)
    secs = time.perf_counter() - t0
    mu, x_T = eval_set(seed)
    out = sample_distilled(D, mu, SDE, nfe=calls, x_T=x_T)
    ref = sample(teacher, mu, SDE, nfe=20, x_T=x_T)
    return dict(w1=w1(out, mu), to_teacher=(out - ref).abs().mean().item(), train_seconds=secs,
                teacher_w1_mr20=w1(ref, mu), teacher_w1_mr10=w1(sample(teacher, mu, SDE, nfe=10, x_T=x_T), mu),
                times=[round(t, 4) for t in D.times.tolist()], step=D.step)


def job_id(job: dict) -> str:
    """What identifies a run: everything but the table it was planned for (a default run serves both)."""
    return json.dumps({k: v for k, v in job.items() if k != "part"}, sort_keys=True)


def is_default(row: dict) -> bool:
    """A run of the default method with the default options (the budget table's rows)."""
    return row.get("method") == "regression" and not ({"lr", "loss", "schedule", "step"} & set(job_keys(row)))


def job_keys(row: dict) -> dict:
    return json.loads(row["job"]) if "job" in row else {}


def load(path: Path = OUT) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plan(part: str, quick: bool, seeds: list[int], budgets: list[int]) -> list[dict]:
    """The runs, most important first: references, the core method comparison, the budget table,
    then the secondary comparisons (other learning rates, L1, where the intermediate times go)."""
    jobs: list[dict] = []
    it = 150 if quick else 1000
    if part in ("refs", "all"):
        jobs += [dict(part="refs", seed=s) for s in seeds]
    if part in ("compare", "all"):
        for calls in (1, 2, 4):
            jobs.append(dict(part="compare", method="regression", calls=calls, iterations=it, seed=0))
            for method in ("consistency", "progressive"):
                jobs.append(dict(part="compare", method=method, calls=calls, iterations=it, seed=0))
            if calls > 1:
                jobs.append(dict(part="compare", method="regression", step="renoise", calls=calls, iterations=it, seed=0))
    if part in ("budget", "all"):
        for seed in seeds:
            for b in (budgets if seed == seeds[0] else [budgets[-1]]):
                for calls in (1, 2, 4):
                    jobs.append(dict(part="budget", method="regression", calls=calls, iterations=b, seed=seed))
    if part in ("init", "all"):  # what the student predicts when it starts from a noise teacher's weights
        for calls in (1, 2):
            for sp in ("data", "velocity", "noise"):
                jobs.append(dict(part="init", calls=calls, iterations=it, seed=0, init="teacher", student_prediction=sp,
                                 lr=1e-3))
            for lr in (1e-3, LR):
                jobs.append(dict(part="init", calls=calls, iterations=it, seed=0, init="scratch",
                                 student_prediction="data", lr=lr))
    if part in ("compare", "all"):
        for calls in (1, 2, 4):
            for method in ("consistency", "progressive"):
                jobs.append(dict(part="compare", method=method, calls=calls, iterations=it, seed=0, lr=3e-3))
        jobs.append(dict(part="compare", method="regression", calls=1, iterations=it, seed=0, loss="l1"))
        for calls in (2, 4):  # where the student's intermediate times go
            for sched in ("karras-t-tmin", "linspace"):
                jobs.append(dict(part="compare", method="regression", calls=calls, iterations=it, seed=0,
                                 schedule=sched))
    seen, unique = set(), []
    for job in jobs:
        if job_id(job) not in seen:
            seen.add(job_id(job))
            unique.append(job)
    return unique


def execute(job: dict) -> dict:
    """The job's result row: the job's own keys, its metrics and `job` (its id, for resuming)."""
    kw = {k: v for k, v in job.items() if k not in ("part", "schedule")}
    if job["part"] == "refs":
        metrics = references(job["seed"])
    elif job["part"] == "init":
        metrics = run_init(**kw)
    else:
        if "schedule" in job:
            kw["times"] = student_times(SDE, job["calls"], job["schedule"])
        metrics = run(**kw)
    return {**job, **metrics, "job": job_id(job)}


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
            f"Python {platform.python_version()}")


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def report(rows: list[dict], header: str) -> str:
    refs = [r for r in rows if r.get("part") == "refs"]
    lines = [f"# Distillation on the analytic problem\n", header, ""]
    if refs:
        lines += ["## References (perfect network), W1 to the true law, mean ± std over eval seeds\n",
                  "| sampler | NFE | W1 |", "|---|---|---|"]
        for name, label, nfe in (("mr5", "MR Sampler (defaults: ODE-2 data karras-t-tmin)", 5),
                                 ("mr10", "MR Sampler (defaults)", 10), ("mr20", "MR Sampler = the teacher's solve", 20),
                                 ("posterior100", "IR-SDE posterior sampling", 100), ("floor", "exact sample (floor)", "-")):
            lines.append(f"| {label} | {nfe} | {_ms([r[name] for r in refs])} |")
        lines.append("")
    runs = [r for r in rows if "method" in r]
    inits = [r for r in rows if r.get("part") == "init"]
    budgets = sorted({r["iterations"] for r in runs if is_default(r)})
    cmp_budget = max((r["iterations"] for r in runs if not is_default(r)), default=None)
    comp = [r for r in runs if r["seed"] == 0 and r["iterations"] == cmp_budget]
    if comp:
        lines += ["## Method comparison (seed 0, same budget, lr 1e-2 unless noted)\n",
                  "| method | step | calls | iterations | lr | loss | student times | W1 | mean abs to teacher ODE | train s | teacher share |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(comp, key=lambda r: (r["calls"], r["method"], r["step"], -job_keys(r).get("lr", LR), r["job"])):
            lines.append(f"| {r['method']} | {r['step']} | {r['calls']} | {r['iterations']} | {job_keys(r).get('lr', LR):g} | "
                         f"{r.get('loss', 'l2')} | {r.get('schedule', 'uniform-lambda')} {r['times']} | {r['w1']:.4f} | "
                         f"{r['to_teacher']:.4f} | {r['train_seconds']:.0f} | {r['teacher_seconds'] / r['train_seconds']:.0%} |")
        lines.append("")
    bud = [r for r in runs if is_default(r)]
    if bud:
        lines += ["## Default method (regression, ODE steps): W1 per calls and budget\n",
                  "Mean ± std over seeds where there are several (training seed s, eval seed s).\n",
                  "| calls | " + " | ".join(f"{b} it." for b in budgets) + " | train s (largest) |",
                  "|---|" + "---|" * (len(budgets) + 1)]
        for calls in (1, 2, 4):
            cells = []
            for b in budgets:
                vals = [r["w1"] for r in bud if r["calls"] == calls and r["iterations"] == b]
                cells.append(_ms(vals) if vals else "")
            secs = [r["train_seconds"] for r in bud if r["calls"] == calls and r["iterations"] == budgets[-1]]
            lines.append(f"| {calls} | " + " | ".join(cells) + (f" | {statistics.mean(secs):.0f} |" if secs else " | |"))
        lines.append("")
        top = budgets[-1]
        by_seed: dict[int, dict] = {}
        for r in bud:
            if r["iterations"] == top:
                by_seed.setdefault(r["seed"], {})[r["calls"]] = r["w1"]
        ref_by_seed = {r["seed"]: r for r in refs}
        seeds = [s for s in sorted(by_seed) if s in ref_by_seed and {1, 2} <= set(by_seed[s])]
        if seeds:
            lines += [f"### The bar at {top} iterations, per seed\n",
                      "| seed | 1 call | 2 calls | 4 calls | MR@5 | MR@10 | posterior@100 | best of 1-2 calls <= posterior@100 |",
                      "|---|---|---|---|---|---|---|---|"]
            for s in seeds:
                d, rf = by_seed[s], ref_by_seed[s]
                best = min(d[1], d[2])
                lines.append(f"| {s} | {d[1]:.4f} | {d[2]:.4f} | {d.get(4, float('nan')):.4f} | {rf['mr5']:.4f} | "
                             f"{rf['mr10']:.4f} | {rf['posterior100']:.4f} | {'yes' if best <= rf['posterior100'] else 'NO'} |")
            best_mean = min(statistics.mean(by_seed[s][c] for s in seeds) for c in (1, 2))
            post_mean = statistics.mean(ref_by_seed[s]["posterior100"] for s in seeds)
            lines += ["", f"Bar (best of 1 or 2 calls, seed mean, at least as close as posterior@100): "
                      f"{best_mean:.4f} vs {post_mean:.4f}: **{'met' if best_mean <= post_mean else 'NOT met'}**", ""]
    if inits:
        lines += ["## Starting from a trained noise teacher's weights: what the student should predict\n",
                  f"Teacher: PixelMLP trained 3000 steps with the noise objective on the same law (W1 of its own "
                  f"ODE solve: MR@10 {inits[0]['teacher_w1_mr10']:.4f}, MR@20 {inits[0]['teacher_w1_mr20']:.4f}); the student "
                  "is a copy of it (init teacher) or a fresh network of the same architecture (scratch), the default "
                  "method; 'to teacher' is the mean absolute distance to the teacher's MR@20 ODE solution from the same x_T.\n",
                  "| calls | init | student predicts | lr | iterations | W1 | to teacher | train s |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(inits, key=lambda r: (r["calls"], r["init"], r["student_prediction"], r["lr"])):
            lines.append(f"| {r['calls']} | {r['init']} | {r['student_prediction']} | {r['lr']:g} | {r['iterations']} | "
                         f"{r['w1']:.4f} | {r['to_teacher']:.4f} | {r['train_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["refs", "compare", "budget", "init", "all"], default="all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    p.add_argument("--quick", action="store_true", help="budget 150 and one seed: a smoke run of a few minutes")
    p.add_argument("--methods", nargs="+", default=None, help="only the runs of these methods (and no references)")
    p.add_argument("--report", action="store_true", help="only rewrite the markdown from the JSONL")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--doc", type=Path, default=DOC)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.quick:
        a.seeds, a.budgets = a.seeds[:1], [150]
    header = (f"Machine: {machine()}.\n\nLaw of x0 - mu (held out): {LAW_KW}; SDE: {SDE!r}; student: PixelMLP "
              f"({sum(p.numel() for p in PixelMLP().parameters())} parameters); teacher: the exact network "
              f"(mrlight.analytic.Oracle, noise prediction) solved by the MR Sampler ODE-2 data form on karras-t-tmin "
              f"NFE 20 merged with the student's times; {PIXELS} evaluation pixels. Command: "
              f"`python benchmarks/distill_analytic.py {' '.join(sys.argv[1:] if argv is None else argv)}`.")
    print(header, file=sys.stderr)
    if not a.report:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        done = {r.get("job") for r in load(a.out)}
        for job in plan(a.part, a.quick, a.seeds, a.budgets):
            if job_id(job) in done or (a.methods and job.get("method", job["part"]) not in a.methods):
                continue
            t0 = time.perf_counter()
            row = execute(job)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{json.dumps(row)}  [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
            a.doc.parent.mkdir(parents=True, exist_ok=True)
            a.doc.write_text(report(load(a.out), header))
    text = report(load(a.out), header)
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    a.doc.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
