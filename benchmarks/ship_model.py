"""Turn a training checkpoint into a shipped model: EMA weights and the run config only.

    python benchmarks/ship_model.py /work/runs/denoise_data/step_8000.ckpt checkpoints/mrlight-denoise-s25-cpu.ckpt

The output is an mrlight checkpoint that `sample.py ckpt=`, `Restorer.from_checkpoint` and
`init_from`-style fine-tuning read like any other: {'state_dict': the EMA network weights under
'net.', 'hyper_parameters': {'config': the run config}, 'global_step': N}. The optimizer, raw
weights and loop state are dropped, absolute paths of the training machine are removed from the
config (`mrlight.checkpoint.portable_config`), every tensor is float32 and contiguous, and the file loads
with `torch.load(weights_only=True)`. It refuses to write more than --max-mb (5 MB by default,
the project's limit for files in checkpoints/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrlight.checkpoint import absolute_paths, load_checkpoint, network_from_checkpoint, portable_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--max-mb", type=float, default=5.0)
    a = p.parse_args(argv)
    ckpt = load_checkpoint(a.src)
    net = network_from_checkpoint(ckpt, a.src)
    config = portable_config(ckpt["hyper_parameters"]["config"])  # no paths of the training machine
    assert not absolute_paths(config), absolute_paths(config)  # the EMA weights (checkpoint's state_dict)
    shipped = {
        "state_dict": {f"net.{k}": v.detach().float().contiguous().clone() for k, v in net.state_dict().items()},
        "hyper_parameters": {"config": config},
        "global_step": int(ckpt.get("global_step", 0)),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(a.out.suffix + ".tmp")
    torch.save(shipped, tmp)
    size = tmp.stat().st_size / 2**20
    if size > a.max_mb:
        tmp.unlink()
        print(f"error: {a.out} would be {size:.2f} MB, over the {a.max_mb} MB limit; nothing written", file=sys.stderr)
        return 2
    tmp.replace(a.out)
    load_checkpoint(a.out)  # readable with weights_only=True, or this raises
    params = sum(v.numel() for v in net.state_dict().values())
    print(f"wrote {a.out}: {size:.2f} MB, {params / 1e6:.2f} M parameters, step {shipped['global_step']}, "
          f"network {config['network']['name']} {config['network'].get('overrides') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
