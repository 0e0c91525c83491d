"""daclip-unet: key/shape/output parity with a restatement of DA-CLIP's UNet (tests/reference_nets), the
DA-CLIP encoder loaded from a DA-CLIP-layout file, contexts computed once per image, and sample.py end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from mrlight.models import build_network
from reference_nets import official_daclip as official

open_clip = pytest.importorskip("open_clip")

from mrlight.models.daclip_encoder import DaCLIPEncoder, clip_preprocess  # noqa: E402


def randomized(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised proj_out / control layers would hide their paths
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net.eval()


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def check_parity(reference, net, context_dim, sizes=((19, 23), (37, 29))):
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    net.load_state_dict(reference.state_dict(), strict=True)
    net.eval()
    gen = torch.Generator().manual_seed(1)
    for h, w in sizes:
        x_t, mu = torch.rand(2, 3, h, w, generator=gen), torch.rand(2, 3, h, w, generator=gen)
        text, image = torch.randn(2, context_dim, generator=gen), torch.randn(2, context_dim, generator=gen)
        t = torch.tensor([2.25, 63.5])
        with torch.no_grad():
            expected = reference(x_t, mu, t, text_context=text, image_context=image)
            got = net(x_t, mu, t, text_context=text, image_context=image)
        assert relative_error(got, expected) < 1e-4, (h, w)


def test_small_unet_matches_the_published_forward():
    torch.manual_seed(0)
    reference = randomized(official.ConditionalUNet(3, 3, 32, ch_mult=[1, 1, 2, 2], context_dim=16,
                                                    use_degra_context=True, use_image_context=True))
    check_parity(reference, build_network("daclip-unet", nf=32, ch_mult=[1, 1, 2, 2], context_dim=16), 16)


@pytest.mark.slow
def test_universal_ir_unet_keys_count_and_parity():
    torch.manual_seed(0)
    reference = randomized(official.ConditionalUNet(3, 3, 64, ch_mult=[1, 2, 4, 8], context_dim=512,
                                                    use_degra_context=True, use_image_context=True))
    net = build_network("daclip-unet")
    assert sum(p.numel() for p in net.parameters()) == 48_975_747  # issue 8: DA-CLIP's universal-ir UNet
    assert sum(p.numel() for p in reference.parameters()) == 48_975_747
    check_parity(reference, net, 512)


@pytest.mark.slow
def test_wild_ir_unet_parity():
    torch.manual_seed(0)
    reference = randomized(official.ConditionalUNet(3, 3, 64, ch_mult=[1, 2, 4, 8], context_dim=768,
                                                    use_degra_context=False, use_image_context=True, scale=0.5,
                                                    wild=True))
    check_parity(reference, build_network("daclip-unet", context_dim=768, use_degra_context=False, scale=0.5), 768,
                 sizes=((21, 19),))


def test_missing_image_context_is_a_clear_error():
    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=16)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="needs image_context"):
        net(x, x, torch.tensor([1.0]))


# -- the encoder ------------------------------------------------------------------------------------
TINY_CLIP = dict(embed_dim=32, vision_cfg=dict(image_size=224, patch_size=32, width=128, layers=2, head_width=64),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1))


def write_daclip_file(path, seed=0):
    """A DA-CLIP encoder file as DA-CLIP's training saves it ({'epoch', 'name', 'state_dict'}, `module.`
    keys), laid out from DaCLIP's attribute names: clip.*, visual.* (= clip.visual), visual_control.*
    (the tower copy, its transformer wrapped: transformer.transformer.* + transformer.zero_modules.*)."""
    torch.manual_seed(seed)
    clip = open_clip.model.CLIP(**TINY_CLIP)
    control = randomized(copy.deepcopy(clip.visual), seed=seed + 1)
    width, layers = TINY_CLIP["vision_cfg"]["width"], TINY_CLIP["vision_cfg"]["layers"]
    zero_modules = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
    state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    state.update({f"visual.{k}": v for k, v in clip.visual.state_dict().items()})
    for k, v in control.state_dict().items():
        k = k.replace("transformer.", "transformer.transformer.", 1) if k.startswith("transformer.") else k
        state[f"visual_control.{k}"] = v
    state.update({f"visual_control.transformer.zero_modules.{k}": v for k, v in zero_modules.state_dict().items()})
    state["logit_scale"] = clip.logit_scale.detach().clone()
    torch.save({"epoch": 1, "name": "daclip", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return clip, control, zero_modules


def test_encoder_loads_a_daclip_file_and_matches_the_published_control_flow(tmp_path):
    clip, control, zero_modules = write_daclip_file(tmp_path / "daclip.pt")
    encoder = DaCLIPEncoder.from_file(tmp_path / "daclip.pt")
    lq = torch.rand(2, 3, 61, 47)
    with torch.no_grad():
        image_features, degra_features = encoder(lq)
        ref_image, ref_degra = official.daclip_encode_image(clip.visual.eval(), control.eval(), zero_modules,
                                                            clip_preprocess(lq))
    assert image_features.shape == degra_features.shape == (2, TINY_CLIP["embed_dim"])
    assert relative_error(degra_features, ref_degra) < 1e-4
    assert relative_error(image_features, ref_image) < 1e-4
    # the control hiddens matter (non-zero zero_modules), so the two outputs differ from plain CLIP's
    with torch.no_grad():
        plain = clip.visual(clip_preprocess(lq))
    assert relative_error(image_features, plain) > 1e-3


def test_clip_preprocess_is_close_to_the_pil_pipeline():
    from torchvision import transforms

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (150, 260, 3), dtype=np.uint8)).filter(
        __import__("PIL.ImageFilter", fromlist=["GaussianBlur"]).GaussianBlur(3))
    pil = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(224), transforms.ToTensor(),
                              transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                   (0.26862954, 0.26130258, 0.27577711))])(img)
    ours = clip_preprocess(transforms.functional.to_tensor(img)[None])[0]
    assert ours.shape == pil.shape == (3, 224, 224)
    assert (ours - pil).abs().mean() < 0.02  # uint8 rounding and PIL's bicubic vs torch's antialiased bicubic


def test_contexts_are_computed_once_per_image_while_sampling(tmp_path):
    from mrlight.sampling import sample
    from mrlight.sde import MRSDE

    write_daclip_file(tmp_path / "daclip.pt")
    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(tmp_path / "daclip.pt"))
    calls = []
    net.encoder.register_forward_hook(lambda *args: calls.append(1))
    mu = torch.rand(1, 3, 20, 25)
    with torch.no_grad():
        out = sample(net, mu, MRSDE(max_sigma=50), nfe=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == mu.shape and torch.isfinite(out).all()
    assert len(calls) == 1
    assert not any(k.startswith("encoder") for k in net.state_dict())  # the published UNet's keys only
    assert all(p.requires_grad for p in net.parameters()) and not any(p.requires_grad for p in net.encoder.parameters())


def test_convert_and_sample_end_to_end(tmp_path):
    import sample as sample_script
    from mrlight.convert import main as convert_main

    write_daclip_file(tmp_path / "daclip.pt")
    torch.manual_seed(0)
    unet = official.ConditionalUNet(3, 3, 32, ch_mult=[1, 1], context_dim=32, use_degra_context=True,
                                    use_image_context=True)
    torch.save(unet.state_dict(), tmp_path / "universal-ir.pth")
    out = tmp_path / "daclip.ckpt"
    assert convert_main([str(tmp_path / "universal-ir.pth"), str(out), "network=daclip-unet", "network.nf=32",
                         "network.ch_mult=[1,1]", "network.context_dim=32", f"daclip={tmp_path / 'daclip.pt'}",
                         "sde.max_sigma=50"]) == 0
    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    assert sample_script.main([f"ckpt={out}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                               "sampler.nfe=5", "progress=false", f"daclip={tmp_path / 'daclip.pt'}"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (21, 30, 3)


def test_bad_encoder_file_is_a_clear_error(tmp_path):
    from mrlight.interop import WeightsError

    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "not-daclip.pt")
    with pytest.raises(WeightsError, match="not a DA-CLIP encoder file"):
        build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(tmp_path / "not-daclip.pt"))


@pytest.mark.slow  # builds the full ViT-B-32 DA-CLIP encoder (~20 s)
def test_vit_b32_encoder_has_daclip_sizes_and_its_config_is_read_back():
    import json
    import os

    cfg = json.load(open(os.path.join(os.path.dirname(open_clip.__file__), "model_configs", "ViT-B-32.json")))
    encoder = DaCLIPEncoder.from_config(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    state = encoder.state_dict()
    # DaCLIP ViT-B-32 (notes from instantiating the published DaCLIP): 631 keys, 246,213,634 unique parameters
    assert len(state) == 631 and sum(p.numel() for p in encoder.parameters()) == 246_213_634
    from mrlight.models.daclip_encoder import config_from_state

    embed_dim, vision_cfg, text_cfg = config_from_state(state)
    assert embed_dim == cfg["embed_dim"] and text_cfg == cfg["text_cfg"]
    assert {k: vision_cfg[k] for k in cfg["vision_cfg"]} == cfg["vision_cfg"]


def test_a_daclip_file_given_to_irsde_unet_is_recognised(tmp_path, capsys):
    from mrlight.convert import main as convert_main

    torch.manual_seed(0)
    torch.save(official.ConditionalUNet(3, 3, 32, ch_mult=[1, 1, 2, 2], context_dim=16, use_image_context=True)
               .state_dict(), tmp_path / "universal-ir.pth")
    assert convert_main([str(tmp_path / "universal-ir.pth"), str(tmp_path / "x.ckpt"), "network=irsde-unet",
                         "sde.max_sigma=50"]) == 2
    assert ("looks like: network=daclip-unet network.nf=32 network.ch_mult=[1,1,2,2] network.context_dim=16 "
            "network.use_degra_context=true network.use_image_context=true") in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_copies_share_the_frozen_encoder(tmp_path):
    write_daclip_file(tmp_path / "daclip.pt")
    net = build_network("daclip-unet", nf=32, ch_mult=[1, 1], context_dim=32, daclip=str(tmp_path / "daclip.pt"))
    twin = copy.deepcopy(net)  # what the EMA callback does
    assert twin.encoder is net.encoder
    assert twin.init_conv.weight is not net.init_conv.weight


def test_training_with_the_encoder_attached(tmp_path, load_tiny, env, monkeypatch):
    """Train two steps (with validation and EMA): the encoder stays frozen and out of the checkpoint.

    Frozen: no encoder parameter requires a gradient or has one, the encoder (every submodule) is still in
    eval mode after Lightning's train()/eval() switches, and its weights are bit-identical to those loaded
    from the file, although the optimizer stepped the UNet and the encoder computed its contexts."""
    from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
    from mrlight.models.daclip import DaCLIPUNet
    from mrlight.training import run

    attached, encoder_calls = [], []
    attach = DaCLIPUNet.attach_encoder

    def recording_attach(net, encoder):  # the network and encoder that training builds, as first built
        attach(net, encoder)
        if not attached:
            encoder.register_forward_hook(lambda *args: encoder_calls.append(1))
            attached.append((net, encoder, {k: v.clone() for k, v in net.state_dict().items()},
                             {k: v.clone() for k, v in encoder.state_dict().items()}))

    monkeypatch.setattr(DaCLIPUNet, "attach_encoder", recording_attach)
    write_daclip_file(tmp_path / "daclip.pt")
    overrides = f"network.overrides={{nf: 32, ch_mult: [1, 1], context_dim: 32, daclip: '{tmp_path / 'daclip.pt'}'}}"
    result = run(load_tiny("network.name=daclip-unet", overrides, "objective.prediction=noise"))
    assert result.global_step == 2 and attached
    net, encoder, net_start, encoder_start = attached[0]
    assert encoder_calls  # the encoder computed the contexts (mu changes every batch)
    assert any(not torch.equal(v, net_start[k]) for k, v in net.state_dict().items())  # the UNet was trained
    params = dict(encoder.named_parameters())
    trainable = [k for k, p in params.items() if p.requires_grad or p.grad is not None]
    assert params and not trainable, f"encoder parameters not frozen: {trainable[:5]}"
    in_train_mode = [k or "(encoder)" for k, m in encoder.named_modules() if m.training]
    assert not in_train_mode, f"encoder modules in train mode after training: {in_train_mode[:5]}"
    state = encoder.state_dict()
    assert state.keys() == encoder_start.keys()
    changed = [k for k, v in state.items() if not torch.equal(v, encoder_start[k])]
    assert not changed, f"encoder weights changed in training: {changed[:5]}"
    ckpt = load_checkpoint(result.last_checkpoint)
    assert not any(".encoder." in k or k.startswith("net._encoder") for k in ckpt["state_dict"])
    # the checkpoint records the encoder's identity, not its path: the file is given again at load time
    net = network_from_checkpoint(ckpt, daclip=tmp_path / "daclip.pt")
    assert net.encoder is not None and "val/psnr" in result.val_metrics
