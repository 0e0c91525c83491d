"""DA-CLIP encoders known by what they are (CLIP model + sha256 of the weights), not where they lie:
checkpoints record the identity, `daclip=PATH` is a run-time setting of convert / train / sample, a file
with another hash is refused naming both hashes, old checkpoints holding a path still load. Also: the
contexts are computed once per image in a tiled restore, and the official (uint8-truncating, PIL
bicubic) encoder preprocessing."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mrlight.checkpoint import absolute_paths, load_checkpoint
from mrlight.models.daclip_encoder import CLIP_MEAN, CLIP_STD, clip_preprocess, weights_sha256

UNET = ["network=daclip-unet", "network.nf=32", "network.ch_mult=[1,1]", "network.context_dim=32"]


def _open_clip_helpers():
    pytest.importorskip("open_clip")
    from reference_nets import official_daclip as official
    from test_interop_daclip import write_daclip_file

    return official, write_daclip_file


def _path_strings(config, *paths) -> list[str]:
    """Every config string that names one of `paths` (absolute, or by file name)."""
    text = json.dumps(config)
    return [str(p) for p in paths if str(p) in text or os.path.basename(str(p)) in text]


@pytest.fixture
def encoders(tmp_path):
    """Two tiny random DA-CLIP encoder files laid out as DA-CLIP saves them: enc/daclip.pt and other.pt."""
    _, write_daclip_file = _open_clip_helpers()
    (tmp_path / "enc").mkdir()
    write_daclip_file(tmp_path / "enc" / "daclip.pt", seed=0)
    write_daclip_file(tmp_path / "other.pt", seed=1)
    return tmp_path / "enc" / "daclip.pt", tmp_path / "other.pt"


@pytest.fixture
def converted(tmp_path, encoders):
    """universal-ir-like UNet (random) converted with daclip=enc/daclip.pt."""
    from mrlight.convert import main as convert_main

    official, _ = _open_clip_helpers()
    torch.manual_seed(0)
    unet = official.ConditionalUNet(3, 3, 32, ch_mult=[1, 1], context_dim=32, use_degra_context=True,
                                    use_image_context=True)
    torch.save(unet.state_dict(), tmp_path / "universal-ir.pth")
    out = tmp_path / "daclip.ckpt"
    assert convert_main([str(tmp_path / "universal-ir.pth"), str(out), *UNET, f"daclip={encoders[0]}",
                         "sde.max_sigma=50"]) == 0
    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    return out


def test_identity_is_the_model_and_the_weights_hash_not_the_file(tmp_path, encoders):
    from mrlight.models.daclip_encoder import DaCLIPEncoder, file_identity
    from mrlight.weights import read_state_dict

    first, other = encoders
    identity = file_identity(first)
    state = read_state_dict(first)
    assert identity == {"model": identity["model"], "sha256": weights_sha256(state)}
    assert len(identity["sha256"]) == 64 and identity["model"].startswith("ViT(")
    # the same weights saved another way (plain state dict, no module. prefix, elsewhere): same identity
    torch.save(state, tmp_path / "plain.pt")
    assert file_identity(tmp_path / "plain.pt") == identity
    assert file_identity(other)["sha256"] != identity["sha256"]
    encoder = DaCLIPEncoder.from_file(first)
    assert encoder.identity == identity
    # sha256 over the sorted keys' name, dtype, shape and bytes
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        digest.update(f"{key}\0{str(t.dtype)[6:]}\0{tuple(t.shape)}\0".encode())
        digest.update(t.numpy().tobytes())
    assert digest.hexdigest() == identity["sha256"]


def test_converted_checkpoint_records_the_identity_and_sample_finds_a_moved_encoder(tmp_path, encoders, converted,
                                                                                     capsys):
    import sample as sample_script
    from mrlight.models.daclip_encoder import file_identity

    first, other = encoders
    identity, other_identity = file_identity(first), file_identity(other)
    config = load_checkpoint(converted)["hyper_parameters"]["config"]
    assert config["network"]["overrides"]["daclip"] == identity
    assert config["daclip"] is None
    assert not _path_strings(config, first, tmp_path) and not absolute_paths(config)

    moved = tmp_path / "elsewhere" / "renamed.pt"
    moved.parent.mkdir()
    os.replace(first, moved)
    args = [f"ckpt={converted}", f"input={tmp_path / 'in'}", "sampler.nfe=3", "progress=false"]
    assert sample_script.main([*args, f"output={tmp_path / 'out'}", f"daclip={moved}"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (21, 30, 3)

    capsys.readouterr()
    assert sample_script.main([*args, f"output={tmp_path / 'out2'}"]) == 2  # no encoder: says which one
    err = capsys.readouterr().err
    assert "pass daclip=PATH" in err and identity["sha256"] in err
    assert sample_script.main([*args, f"output={tmp_path / 'out3'}", f"daclip={other}"]) == 2
    err = capsys.readouterr().err
    assert identity["sha256"] in err and other_identity["sha256"] in err and str(other) in err
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_an_old_checkpoint_holding_a_path_still_loads(tmp_path, encoders, converted):
    from mrlight.errors import CheckpointError
    from mrlight.inference import Restorer

    first, other = encoders
    ckpt = load_checkpoint(converted)
    ckpt["hyper_parameters"]["config"]["network"]["overrides"]["daclip"] = str(first)  # as convert used to write
    del ckpt["hyper_parameters"]["config"]["daclip"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    lq = torch.rand(3, 16, 20)
    with pytest.warns(UserWarning, match="by a path .*using .*daclip.pt unchecked"):
        restorer = Restorer.from_checkpoint(old)  # the stored path exists: used, with a warning
    assert restorer(lq, nfe=2).shape == lq.shape
    with pytest.warns(UserWarning, match=f"using daclip={other} unchecked"):
        Restorer.from_checkpoint(old, daclip=other)  # identity unknown: the given file wins
    os.replace(first, tmp_path / "moved.pt")
    with pytest.raises(CheckpointError, match="does not exist here.*pass daclip=PATH"):
        Restorer.from_checkpoint(old)
    with pytest.warns(UserWarning, match="unchecked"):
        restorer = Restorer.from_checkpoint(old, daclip=tmp_path / "moved.pt")
    assert restorer.net.encoder_identity is not None


def test_training_resume_and_validate_after_the_encoder_moved(tmp_path, encoders, load_tiny, env):
    from mrlight.errors import CheckpointError
    from mrlight.inference import Restorer
    from mrlight.models.daclip_encoder import file_identity
    from mrlight.training import evaluate, run

    first, other = encoders
    identity = file_identity(first)
    net = ["network.name=daclip-unet", "network.overrides={nf: 32, ch_mult: [1, 1], context_dim: 32}",
           "objective.prediction=noise", "val.every_n_steps=100", "ema.enabled=false"]
    result = run(load_tiny(*net, f"daclip={first}"))
    assert result.global_step == 2
    config = load_checkpoint(result.last_checkpoint)["hyper_parameters"]["config"]
    assert config["network"]["overrides"]["daclip"] == identity and config["daclip"] is None
    assert not _path_strings(config, first)

    moved = tmp_path / "moved" / "encoder.pt"
    moved.parent.mkdir()
    os.replace(first, moved)
    resumed = run(load_tiny(*net, f"daclip={moved}", "ckpt_path=last", "trainer.max_steps=3"))
    assert resumed.global_step == 3
    metrics = evaluate(load_tiny(*net, f"daclip={moved}", "stage=validate", "ckpt_path=last"))
    assert "val/psnr" in metrics
    with pytest.raises(CheckpointError) as refused:
        evaluate(load_tiny(*net, f"daclip={other}", "stage=validate", "ckpt_path=last"))
    assert identity["sha256"] in str(refused.value) and file_identity(other)["sha256"] in str(refused.value)
    with pytest.raises(CheckpointError, match="pass daclip=PATH"):
        evaluate(load_tiny(*net, "stage=validate", "ckpt_path=last"))
    restorer = Restorer.from_checkpoint(resumed.last_checkpoint, daclip=moved)
    assert restorer(torch.rand(3, 12, 14), nfe=2).shape == (3, 12, 14)


def test_daclip_is_refused_for_other_networks(load_tiny, encoders):
    from mrlight.errors import ConfigError

    with pytest.raises(ConfigError, match="daclip=.*daclip-unet; network.name is 'unet-tiny'"):
        load_tiny(f"daclip={encoders[0]}")


def test_init_from_compares_identities(tmp_path, encoders, converted):
    from mrlight.checkpoint import init_network_from
    from mrlight.errors import CheckpointError
    from mrlight.models import build_network

    first, other = encoders
    network_cfg = {"name": "daclip-unet", "overrides": {"nf": 32, "ch_mult": [1, 1], "context_dim": 32}}
    moved = tmp_path / "moved.pt"
    os.replace(first, moved)
    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(moved))
    init_network_from(net, converted, network_cfg, "noise")  # the same encoder elsewhere: fine
    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(other))
    with pytest.raises(CheckpointError, match="another DA-CLIP encoder.*sha256 [0-9a-f]{64}.*sha256 [0-9a-f]{64}"):
        init_network_from(net, converted, network_cfg, "noise")


# -- contexts once per image in a tiled restore -----------------------------------------------------
def test_tiled_restore_encodes_each_image_once(encoders):
    from mrlight.inference import Restorer
    from mrlight.models import build_network
    from mrlight.sde import MRSDE

    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(encoders[0]))
    seen = []
    net.encoder.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    tiles = []
    net.register_forward_pre_hook(lambda module, args, kwargs: tiles.append(
        (tuple(args[0].shape), kwargs.get("image_context") is not None)), with_kwargs=True)
    restorer = Restorer(net, MRSDE(max_sigma=50), "noise", {"sampler": "mr", "nfe": 4})
    images = [torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for i, lq in enumerate(images):
        out = restorer(lq, name=str(i), tile=24, tile_overlap=4)
        assert out.shape == lq.shape and torch.isfinite(out).all()
    n_tiles = 2 * 3  # 40 px -> tiles at 0 and 16 (24 px, stride 20), 52 px -> 0, 20, 28
    assert len(tiles) == 2 * 4 * n_tiles and all(shape == (1, 3, 24, 24) and ctx for shape, ctx in tiles)
    assert seen == [(1, 3, 40, 52)] * 2  # exactly one encoder call per image, on the whole image


def test_tiled_contexts_are_the_whole_images(encoders):
    """Every tile is conditioned on the whole image's contexts: the tiled result equals the untiled one
    with tiles as large as the image, and an explicit-context call per tile gives the same output."""
    from mrlight.inference import tiled
    from mrlight.models import build_network

    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(encoders[0])).eval()
    x, mu, t = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40), torch.tensor([30.0])
    with torch.no_grad():
        image_context, text_context = net.contexts(mu)
        expected = tiled(lambda a, m, s: net(a, m, s, image_context=image_context, text_context=text_context),
                         24, 4)(x, mu, t)
        got = tiled(net, 24, 4, conditioning=net.global_conditioning)(x, mu, t)
    assert torch.equal(got, expected)


# -- the official preprocessing ------------------------------------------------------------------------
def _official_clip_transform(np_image: np.ndarray) -> torch.Tensor:
    """DA-CLIP's `clip_transform` (universal-image-restoration/config/daclip-sde/app.py), verbatim in effect."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    pil_image = Image.fromarray((np_image * 255).astype(np.uint8))
    return Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224), ToTensor(),
                    Normalize(CLIP_MEAN, CLIP_STD)])(pil_image)


@pytest.mark.parametrize("size", [(150, 260), (300, 170), (40, 61)])
def test_official_preprocessing_is_daclips_pil_pipeline_exactly(size):
    rng = np.random.default_rng(sum(size))
    u8 = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    np_image = u8.astype(np.float32) / 255.0  # how DA-CLIP (and mrlight's read_image) make float images
    ours = clip_preprocess(torch.from_numpy(np_image).permute(2, 0, 1)[None])[0]
    assert torch.equal(ours, _official_clip_transform(np_image))
    # torch's antialiased bicubic on the float tensor (the "tensor" mode) is not PIL's
    assert (clip_preprocess(torch.from_numpy(np_image).permute(2, 0, 1)[None], mode="tensor")[0] - ours).abs().max() > 1e-3


def test_official_preprocessing_truncates_to_uint8():
    # k/255 + 0.7/255: truncation gives k, rounding k + 1; a flat image keeps its value through the resize
    values = np.array([10.7, 100.7, 200.7], dtype=np.float32) / 255
    np_image = np.broadcast_to(values, (32, 32, 3)).astype(np.float32)
    ours = clip_preprocess(torch.from_numpy(np_image).permute(2, 0, 1)[None])[0]
    assert torch.equal(ours, _official_clip_transform(np_image))
    truncated = (torch.tensor([10.0, 100.0, 200.0]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(ours[:, 100, 100], truncated, atol=1e-6)
    with pytest.raises(ValueError, match="preprocess='pil'.*official, tensor"):
        clip_preprocess(torch.zeros(1, 3, 8, 8), mode="pil")


def test_encoder_identity_survives_half_precision_and_copies(encoders):
    import copy

    from mrlight.models import build_network

    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(encoders[0]))
    identity = net.encoder_identity
    twin = copy.deepcopy(net).to(torch.bfloat16)
    assert twin.encoder_identity == identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = twin(torch.rand(1, 3, 20, 24), torch.rand(1, 3, 20, 24), torch.tensor([10.0]))
    assert out.shape == (1, 3, 20, 24) and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-L-14"])
def test_released_encoders_are_named_by_their_clip_model(name):
    open_clip = pytest.importorskip("open_clip")
    from mrlight.models.daclip_encoder import model_name

    cfg = json.load(open(os.path.join(os.path.dirname(open_clip.__file__), "model_configs", f"{name}.json")))
    with torch.device("meta"):  # shapes only: no 1 GB of weights
        clip = open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
    assert model_name({f"clip.{k}": v for k, v in clip.state_dict().items()}) == name
