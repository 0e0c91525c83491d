"""python -m mrlight.convert: official weights files -> mrlight checkpoints that sample.py reads;
wrappers and prefixes accepted, wrong architectures refused with the reasons and nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
from mrlight.convert import main as convert_main
from reference_nets import official_irsde as official

SMALL_UNET = ["network=irsde-unet", "network.nf=8", "network.depth=3"]


@pytest.fixture
def official_unet(tmp_path):
    """A small IR-SDE UNet (random weights) saved as IR-SDE's save_network does: a plain CPU state dict."""
    torch.manual_seed(0)
    net = official.ConditionalUNet(3, 3, 8, depth=3)
    path = tmp_path / "100_G.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _write_odd_images(folder, sizes=((19, 23), (33, 17))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return sizes


@pytest.mark.parametrize("wrap", ["plain", "module_prefix", "state_dict", "params"])
def test_round_trip_records_sde_and_noise_prediction(official_unet, tmp_path, wrap):
    net, plain = official_unet
    state = net.state_dict()
    src = tmp_path / f"{wrap}.pth"
    torch.save({"plain": state, "module_prefix": {f"module.{k}": v for k, v in state.items()},
                "state_dict": {"state_dict": state, "iter": 5}, "params": {"params": state}}[wrap], src)
    out = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(out), *SMALL_UNET, "sde.max_sigma=30", "sde.T=100"]) == 0
    ckpt = load_checkpoint(out)
    config = ckpt["hyper_parameters"]["config"]
    assert config["sde"]["max_sigma"] == 30 and config["sde"]["T"] == 100
    assert config["objective"]["prediction"] == "noise"
    assert config["network"] == {"name": "irsde-unet", "overrides": {"nf": 8, "depth": 3}}
    restored = network_from_checkpoint(ckpt, out).state_dict()
    assert restored.keys() == state.keys() and all(torch.equal(restored[k], state[k]) for k in state)


def test_wrong_architecture_lists_the_reasons_and_writes_nothing(official_unet, tmp_path, capsys):
    _, src = official_unet
    out = tmp_path / "out.ckpt"
    assert convert_main([str(src), str(out), "network=refusion-nafnet", "sde.max_sigma=50"]) == 2
    err = capsys.readouterr().err
    assert "does not fit network 'refusion-nafnet'" in err
    assert "missing key(s): intro.weight" in err and "unexpected key(s): init_conv.weight" in err
    assert "looks like: network=irsde-unet network.nf=8 network.depth=3" in err
    assert not out.exists() and not list(tmp_path.glob("*.ckpt*"))


def test_shape_mismatch_is_named(official_unet, tmp_path, capsys):
    _, src = official_unet
    out = tmp_path / "out.ckpt"
    assert convert_main([str(src), str(out), "network=irsde-unet", "network.nf=16", "network.depth=3",
                         "sde.max_sigma=10"]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch(es): init_conv.weight: file (8, 6, 7, 7) vs network (16, 6, 7, 7)" in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["no_max_sigma", "no_network", "unknown_preset", "not_weights", "exists",
                                  "data_prediction", "one_path"])
def test_bad_arguments_are_clear_errors(official_unet, tmp_path, capsys, case):
    _, src = official_unet
    out = tmp_path / "out.ckpt"
    junk = tmp_path / "junk.pth"
    junk.write_text("not a tensor file")
    args = {"no_max_sigma": [str(src), str(out), *SMALL_UNET],
            "no_network": [str(src), str(out), "sde.max_sigma=10"],
            "unknown_preset": [str(src), str(out), "network=irsde-unett", "sde.max_sigma=10"],
            "not_weights": [str(junk), str(out), *SMALL_UNET, "sde.max_sigma=10"],
            "exists": [str(src), str(src.with_suffix(".ckpt")), *SMALL_UNET, "sde.max_sigma=10"],
            "data_prediction": [str(src), str(out), *SMALL_UNET, "sde.max_sigma=10", "objective.prediction=data"],
            "one_path": [str(src), *SMALL_UNET, "sde.max_sigma=10"]}[case]
    if case == "exists":
        src.with_suffix(".ckpt").write_bytes(b"keep me")
    assert convert_main(args) == 2
    err = capsys.readouterr().err
    expected = {"no_max_sigma": "released models use IR-SDE deraining / deblurring: 10",
                "no_network": "network=<preset> is required", "unknown_preset": "did you mean 'irsde-unet'",
                "not_weights": "not a readable PyTorch weights file", "exists": "overwrite=true",
                "data_prediction": "predict noise", "one_path": "expected two paths"}[case]
    assert expected in err
    assert not out.exists()
    if case == "exists":
        assert src.with_suffix(".ckpt").read_bytes() == b"keep me"


def test_sample_restores_odd_sized_images_with_a_converted_model(official_unet, tmp_path, monkeypatch):
    import sample

    _, src = official_unet
    out = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(out), *SMALL_UNET, "sde.max_sigma=10"]) == 0
    sizes = _write_odd_images(tmp_path / "in")
    assert sample.main([f"ckpt={out}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                        "sampler.nfe=5", "progress=false"]) == 0
    for i, (h, w) in enumerate(sizes):
        restored = np.asarray(Image.open(tmp_path / "out" / f"img{i}.png"))
        assert restored.shape == (h, w, 3) and restored.std() > 0


@pytest.mark.slow  # the bar's literal commands on the released nf 64 / depth 4 network (137 M parameters)
def test_bar_commands_full_size_irsde_unet(tmp_path, env):
    from conftest import run_script
    import subprocess
    import sys

    torch.manual_seed(0)
    src = tmp_path / "ir-sde.pth"
    torch.save(official.ConditionalUNet(3, 3, 64, depth=4).state_dict(), src)
    out = tmp_path / "irsde-derain.ckpt"
    proc = subprocess.run([sys.executable, "-m", "mrlight.convert", str(src), str(out), "network=irsde-unet",
                           "sde.max_sigma=10"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sizes = _write_odd_images(tmp_path / "in", sizes=((17, 21),))
    proc = run_script("sample.py", [f"ckpt={out}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                                    "sampler.nfe=5"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.asarray(Image.open(tmp_path / "out" / "img0.png")).shape == (*sizes[0], 3)


def test_lightning_test_stage_accepts_a_converted_checkpoint(official_unet, tmp_path, load_tiny, env):
    """`trainer.test(ckpt_path=converted)` (what `train.py stage=test ckpt_path=` does) loads the weights."""
    import lightning.pytorch as pl

    from mrlight.config import to_dict
    from mrlight.data import build_datamodule
    from mrlight.module import MRDiffusionModule
    from mrlight.training import EMA

    net, src = official_unet
    out = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(out), *SMALL_UNET, "sde.max_sigma=10"]) == 0
    cfg = load_tiny("network.name=irsde-unet", "network.overrides={nf: 8, depth: 3}", "sde.max_sigma=10",
                    "objective.prediction=noise", "test.trajectories=false")
    module = MRDiffusionModule(to_dict(cfg))
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[EMA(0.999)], enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path / "run"))
    results = trainer.test(module, datamodule=build_datamodule(cfg.data, seed=0), ckpt_path=str(out),
                           weights_only=True)
    assert any(k.endswith("/psnr") for k in results[0])
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in net.state_dict().items())


def test_strict_false_drops_stray_keys_and_lists_them(official_unet, tmp_path, capsys):
    """A released file with keys the network does not have: refused by default (strict), loaded with
    strict=false as the official loaders do (`load_state_dict(strict=False)`), the dropped keys printed."""
    net, _ = official_unet
    state = {**net.state_dict(), "extra.weight": torch.zeros(3), "module_util.buffer": torch.ones(1)}
    src = tmp_path / "stray.pth"
    torch.save(state, src)
    out = tmp_path / "out.ckpt"
    assert convert_main([str(src), str(out), *SMALL_UNET, "sde.max_sigma=10"]) == 2
    assert "2 unexpected key(s): extra.weight, module_util.buffer" in capsys.readouterr().err
    assert not out.exists()
    assert convert_main([str(src), str(out), *SMALL_UNET, "sde.max_sigma=10", "strict=false"]) == 0
    printed = capsys.readouterr().out
    assert "dropped 2 key(s)" in printed and "extra.weight, module_util.buffer" in printed
    restored = network_from_checkpoint(load_checkpoint(out), out).state_dict()
    assert restored.keys() == net.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in net.state_dict().items())
    # missing keys stay an error without strict
    del state["init_conv.weight"]
    torch.save(state, src)
    assert convert_main([str(src), str(tmp_path / "b.ckpt"), *SMALL_UNET, "sde.max_sigma=10", "strict=false"]) == 2
    assert "missing key(s): init_conv.weight" in capsys.readouterr().err
    assert convert_main([str(src), str(tmp_path / "c.ckpt"), *SMALL_UNET, "sde.max_sigma=10", "strict=maybe"]) == 2
    assert "strict='maybe': expected true or false" in capsys.readouterr().err
