"""Stored optimized time steps for `time_schedule="optimized"` (computed by benchmarks/tune_tables.py).

The tables hold, for IR-SDE's standard SDEs (T 100, cosine, eps 0.005, max_sigma 10 / 30 / 50 / 70),
the steps `mrlight.sampling.optimize.optimize_times` found for NFE 5 / 10 / 20, orders 1-3, with and
without UniC. Nothing is tuned at sampling time: a missing entry is an error that says how to tune
steps (a search takes minutes, and inside `sample()` it would run at the first validation, on every
DDP rank).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mrlight.sde import MRSDE

TABLE_PATH = Path(__file__).with_name("optimized_steps.json")
TABLE_NFES = (5, 10, 20)
TABLE_ORDERS = (1, 2, 3)


def sde_key(sde: MRSDE) -> str:
    return f"T={sde.T},schedule={sde.schedule},eps={sde.eps:g},max_sigma={sde.max_sigma * 255:.6g}"


def entry_key(nfe: int, order: int, corrector: str) -> str:
    return f"nfe={nfe},order={order},corrector={corrector}"


def load_tables(path: Path = TABLE_PATH) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


_TABLES: dict = {}


def optimized_times(sde: MRSDE, nfe: int, order: int, corrector: str = "none") -> torch.Tensor:
    """`time_schedule="optimized"`: the stored table's times, or a ValueError saying how to tune them.

    Tables are tuned for the data-form ODE of each order; the noise form and the stochastic
    solvers use the table of their order (docs/SAMPLERS.md measures how well they transfer).
    """
    if not _TABLES:
        _TABLES.update(load_tables())
    skey, ekey = sde_key(sde), entry_key(nfe, order, corrector)
    times = _TABLES.get(skey, {}).get("times", {}).get(ekey)
    if times is None:
        stored = ", ".join(k for k in _TABLES if not k.startswith("_"))
        raise ValueError(
            f"time_schedule='optimized': no stored steps for {sde}, {ekey} (stored: {stored}; NFE "
            f"{'/'.join(map(str, TABLE_NFES))}, orders {'/'.join(map(str, TABLE_ORDERS))}). Tune steps for your "
            f"network with `python -m mrlight.tune_steps ckpt=... input=... nfe={nfe} order={order} "
            f"corrector={corrector} output=steps.yaml` and pass time_schedule=steps.yaml, or choose a named schedule")
    return torch.tensor(times, dtype=torch.float64)
