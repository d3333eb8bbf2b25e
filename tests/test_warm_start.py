"""Warm starts by role: RT-DETR checkpoints move into any zoo RT-DETR by what each tensor does, never by layer index."""

from __future__ import annotations

import glob
from pathlib import Path

import official_fixture as fx
import pytest
import torch

from yolo_plugins.weights.warm_start import role_keys

ROOT = Path(__file__).resolve().parents[1]
ZOO = sorted(Path(p).name for p in glob.glob(str(ROOT / "cfg" / "models" / "rtdetr*.yaml")))
PARTS = {"input_proj": 3, "aifi": 1, "lateral_convs": 2, "fpn_blocks": 2, "downsample_convs": 2, "pan_blocks": 2}


def _model(cfg: str, nc: int = 80, seed: int = 0):
    from ultralytics.nn.tasks import RTDETRDetectionModel

    torch.manual_seed(seed)
    return RTDETRDetectionModel(cfg, nc=nc, verbose=False)


def _parts(keys: dict[str, str]) -> dict[str, int]:
    """How many instances of each encoder part a role map has."""
    seen = {".".join(r.split(".")[:2]) for r in keys.values() if r.split(".")[0] in PARTS}
    return {p: sum(1 for s in seen if s.split(".")[0] == p) for p in PARTS}


@pytest.mark.parametrize("cfg", ["rtdetr-l.yaml", *ZOO])
def test_every_rtdetr_maps_onto_the_official_parts(cfg):
    """Stock and zoo RT-DETRs: three input projections, one AIFI, two of each CCFF part, no tensor without a role."""
    keys = role_keys(_model(cfg))
    assert _parts(keys) == PARTS
    assert not [r for r in keys.values() if r.startswith("other.")]


def test_stock_resnet50_and_official_r50vd_agree_on_every_encoder_and_decoder_role():
    """The stock rtdetr-resnet50.yaml and rtdetr-r50vd.yaml write the same hybrid encoder and decoder: the role keys
    and shapes of those parts are identical, although the backbones (and so the layer numbers) differ."""

    def roles(cfg):
        m = _model(cfg)
        sd = m.state_dict()
        return {r: tuple(sd[k].shape) for k, r in role_keys(m).items() if not r.startswith("backbone.")}

    assert roles("rtdetr-resnet50.yaml") == roles("rtdetr-r50vd.yaml")


def test_stock_checkpoint_warm_starts_a_zoo_model_by_role(tmp_path):
    """rtdetr-l weights into rtdetr-effvit-l.yaml: each target tensor is the source tensor of the same role when the
    shapes agree, untouched otherwise; tensors that only share a layer number and shape are not copied."""
    from ultralytics import RTDETR

    source = _model("rtdetr-l.yaml", seed=1)
    path = tmp_path / "rtdetr-l.pt"
    torch.save({"model": source, "train_args": {}}, path)
    model = RTDETR("rtdetr-effvit-l.yaml")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    model.load(path)
    after = model.model.state_dict()

    src_keys, dst_keys = role_keys(source), role_keys(model.model)
    src_roles = {src_keys[k]: v for k, v in source.state_dict().items()}
    copied = untouched = 0
    for key, role in dst_keys.items():
        s = src_roles.get(role)
        if s is not None and s.shape == after[key].shape and not role.startswith("backbone."):
            assert torch.equal(after[key], s), key
            copied += 1
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(after[key], before[key]), key
            untouched += 1
    assert copied > 150 and untouched > 500  # the decoder and most of the encoder move; the EfficientViT stays
    src_sd = source.state_dict()
    coincidences = [  # same 'model.N.' name and shape in both, different part: the host's transfer would copy these
        k
        for k, r in dst_keys.items()
        if k in src_sd
        and src_sd[k].shape == after[k].shape
        and src_keys[k] != r
        and not torch.equal(src_sd[k], before[k])  # tensors both initialise alike (BN ones) prove nothing
    ]
    assert coincidences, "the models should share some names by coincidence, else this test proves nothing"
    assert all(not torch.equal(after[k], src_sd[k]) for k in coincidences)


def test_train_with_an_official_pth_as_pretrained(tmp_path, tiny_data):
    """yolo train model=rtdetr-r18vd.yaml pretrained=<official .pth> data=<3 classes>: the model the trainer starts
    from holds the file's tensors everywhere but the class-dependent heads."""
    from ultralytics import RTDETR

    from yolo_plugins.weights.official_rtdetr import build, recognise

    meta, _ = fx.load("rtdetr_r18vd")
    sd = fx.release_state_dict(meta)
    path = tmp_path / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"
    torch.save({"ema": {"module": sd}}, path)
    reference, _ = build(recognise(sd), sd)
    ref_keys = role_keys(reference)
    ref = {ref_keys[k]: v for k, v in reference.state_dict().items()}

    class Started(Exception):
        pass

    seen = {}

    def stop(trainer):
        seen["model"] = trainer.model
        raise Started

    model = RTDETR("rtdetr-r18vd.yaml")
    model.add_callback("on_pretrain_routine_end", stop)
    with pytest.raises(Started):
        model.train(
            data=tiny_data,
            pretrained=str(path),
            epochs=1,
            imgsz=64,
            batch=2,
            workers=0,
            device="cpu",
            project=str(tmp_path),
            name="t",
            plots=False,
            val=False,
            verbose=False,
            amp=False,
        )
    trained = seen["model"]
    assert trained.nc != 80
    heads = ("decoder.denoising_class_embed", "decoder.enc_score_head", "decoder.dec_score_head")
    sd_now = trained.state_dict()
    checked = 0
    for key, role in role_keys(trained).items():
        if role.startswith(heads) or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(sd_now[key].float(), ref[role].float()), key
        checked += 1
    assert checked == len(sd_now) - 9 - sum(k.endswith("num_batches_tracked") for k in sd_now)


def test_stock_to_stock_loads_stay_the_hosts(monkeypatch):
    """Loading a stock RT-DETR into a stock YAML never takes the role path (stock behaviour unchanged)."""
    import yolo_plugins.weights.warm_start as ws

    def refuse(*args, **kwargs):
        raise AssertionError("the role transfer ran for two stock models")

    monkeypatch.setattr(ws, "transfer", refuse)
    source, target = _model("rtdetr-l.yaml", seed=1), _model("rtdetr-l.yaml", seed=2)
    target.load(source)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
