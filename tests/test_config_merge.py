"""Free-form config blocks are replaced whole by a later layer, not merged key by key."""

from mrlight.config import load_config


def test_degradation_is_replaced_whole_by_the_command_line():
    cfg = load_config(["task=denoise", "data.degradation={name: jpeg, quality: 10}"])
    assert dict(cfg.data.degradation) == {"name": "jpeg", "quality": 10}
    cfg = load_config(["task=denoise", "data.degradation=[{name: haze}, {name: jpeg, quality: 40}]"])
    assert [dict(d) for d in cfg.data.degradation] == [{"name": "haze"}, {"name": "jpeg", "quality": 40}]
    assert dict(load_config(["task=denoise"]).data.degradation) == {"name": "noise", "sigma": 25}


def test_network_overrides_replaced_whole():
    assert set(load_config(["task=demo"]).network.overrides) == {"enc_blocks", "mid_blocks", "dec_blocks"}
    cfg = load_config(["task=demo", "network.overrides={width: 8}"])
    assert dict(cfg.network.overrides) == {"width": 8}


def test_naming_another_network_drops_the_task_files_overrides():
    # configs/task/demo.yaml sets nafnet-tiny fields; they must not follow to another preset
    cfg = load_config(["task=demo", "network.name=unet-tiny"])
    assert cfg.network.name == "unet-tiny" and dict(cfg.network.overrides) == {}
    cfg = load_config(["task=demo", "network.name=unet-tiny", "network.overrides={nf: 8}"])
    assert dict(cfg.network.overrides) == {"nf": 8}
