"""Training losses of RT-DETR heads in the stock engine: the D-FINE / DEIM criterion of ``FDRDecoder`` (matching
union, MAL / VFL, FGL edge targets, DDF, denoising), DEIM's MAL for the stock ``RTDETRDecoder`` behind the YAML's
``criterion:`` key, stock models left on the stock loss, and the errors for a criterion a model cannot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_dfine_models import EFFVIT_HEAD, TINY_TRAIN, _model

ROOT = Path(__file__).resolve().parents[1]


def _batch(boxes: list[list[float]], cls: list[int], image: list[int], n: int = 2, size: int = 128) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, size, size, generator=g),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        "batch_idx": torch.tensor(image, dtype=torch.float32),
    }


BATCH = ([[0.5, 0.5, 0.3, 0.3], [0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.4, 0.3]], [0, 1, 2], [0, 0, 1])


def test_union_keeps_the_box_most_layers_chose_for_each_query():
    from yolo_plugins.blocks.dfine.matching import union

    t = torch.tensor
    layer_a = [(t([0, 1]), t([5, 6])), (t([], dtype=torch.long), t([], dtype=torch.long))]
    layer_b = [(t([0, 2]), t([5, 7])), (t([3]), t([9]))]
    layer_c = [(t([0, 1]), t([6, 7])), (t([3]), t([8]))]  # query 0: box 5 twice, 6 once; query 1: 6 then 7 (tie)
    got = union([layer_a, layer_b, layer_c])
    assert got[0][0].tolist() == [0, 1, 2] and got[0][1].tolist() == [5, 6, 7]
    assert got[1][0].tolist() == [3] and got[1][1].tolist() == [9]  # tie: the first layer's pair


def test_edge_targets_interpolate_the_true_distance_between_two_bins():
    """The two bin weights put the expected offset exactly on the true edge distance inside the bins; outside, all
    weight goes to the outermost bin on that side."""
    from yolo_plugins.blocks.dfine.criterion import edge_targets
    from yolo_plugins.blocks.dfine.distribution import weighting_function

    up, scale = torch.tensor([0.5]), torch.tensor([4.0])
    refs = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)
    boxes = torch.tensor([[0.5, 0.5, 0.26, 0.23], [0.52, 0.47, 0.21, 0.19], [0.5, 0.5, 0.9, 0.9]])
    index, w_right, w_left = edge_targets(refs, boxes, 32, up, scale)
    w = weighting_function(32, up, scale)
    expected = torch.stack(
        [0.5 - (boxes[:, 0] - boxes[:, 2] / 2), 0.5 - (boxes[:, 1] - boxes[:, 3] / 2),
         boxes[:, 0] + boxes[:, 2] / 2 - 0.5, boxes[:, 1] + boxes[:, 3] / 2 - 0.5], -1
    ).reshape(-1) / (0.2 / 4) - 2  # fmt: skip
    left = index.long()
    got = w_left * w[left] + w_right * w[(left + 1).clamp(max=32)]
    inside = expected.abs() < 2 * 0.5 * 4
    assert inside[:8].all() and not inside[8:].any()
    assert torch.allclose(got[inside], expected[inside], atol=1e-5)
    assert torch.allclose(w_left + w_right, torch.ones_like(w_left))
    assert (w_right[8:] == 1).all() and (index[8:] == 31.9).all()  # far beyond the last bin


def test_mal_matches_its_definition():
    """MAL: a matched query learns IoU**gamma at weight 1, an unmatched one 0 at weight p**gamma."""
    from yolo_plugins.blocks.dfine.criterion import mal

    logits = torch.tensor([[[0.3, -1.0], [2.0, 0.5]]])  # 1 image, 2 queries, 2 classes
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # query 0 matched to class 0
    quality = target * 0.6
    p = torch.sigmoid(logits)
    bce = lambda x, y: -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x)))  # noqa: E731
    zero = torch.tensor(0.0)
    by_hand = (
        torch.stack(
            [
                bce(logits[0, 0, 0], torch.tensor(0.6**1.5)),  # matched: IoU**gamma at weight 1
                p[0, 0, 1] ** 1.5 * bce(logits[0, 0, 1], zero),
                p[0, 1, 0] ** 1.5 * bce(logits[0, 1, 0], zero),
                p[0, 1, 1] ** 1.5 * bce(logits[0, 1, 1], zero),
            ]
        )
        .reshape(2, 2)
        .mean(0)
        .sum()
    )
    assert torch.allclose(mal(logits, quality, target, 1.5), by_hand, atol=1e-6)


@pytest.fixture()
def fdr_model(tmp_path):
    model = _model(EFFVIT_HEAD, tmp_path)
    torch.manual_seed(0)
    for head in model.model[-1].dec_bbox_head:  # non-zero bin logits, so DDF has something to distill
        torch.nn.init.normal_(head.layers[-1].weight, std=0.05)
    return model


def test_fdr_head_trains_with_its_own_criterion_every_term_named(fdr_model):
    from yolo_plugins.blocks.dfine.criterion import FDRCriterion

    fdr_model.train()
    loss, items = fdr_model.loss(_batch(*BATCH))
    assert isinstance(fdr_model.criterion, FDRCriterion) and fdr_model.criterion.cls == "vfl"  # no key: D-FINE's
    assert list(items) == ["vfl_loss", "l1_loss", "giou_loss", "fgl_loss", "ddf_loss"]
    assert all(torch.isfinite(v) and v > 0 for v in items.values()), items
    assert torch.allclose(loss, sum(items.values()), rtol=1e-5)  # the terms add up to what is minimised
    loss.backward()
    head = fdr_model.model[-1]
    for name in ("pre_bbox_head", "enc_bbox_head", "enc_score_head", "denoising_class_embed"):
        grads = [p.grad for p in getattr(head, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name  # each is trained


def test_criterion_key_deim_switches_the_fdr_head_to_mal(tmp_path):
    model = _model("criterion: deim\n" + EFFVIT_HEAD, tmp_path)
    model.train()
    _, items = model.loss(_batch(*BATCH))
    assert model.criterion.cls == "mal" and "mal_loss" in items and "vfl_loss" not in items


def test_background_only_batch_trains_without_nan(fdr_model):
    """No box in the batch (nothing to noise, nothing to match): every query still learns "no object"."""
    fdr_model.train()
    loss, items = fdr_model.loss(_batch([], [], []))
    assert torch.isfinite(loss) and items["vfl_loss"] > 0 and items["l1_loss"] == 0
    loss.backward()
    grads = [p.grad for p in fdr_model.model[-1].dec_score_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_validation_loss_uses_the_training_names(fdr_model):
    """In eval the head returns one layer; the criterion scores it under the same names (the validator adds the
    dict into the trainer's)."""
    fdr_model.train()
    _, train_items = fdr_model.loss(_batch(*BATCH))
    fdr_model.eval()
    batch = _batch(*BATCH)
    with torch.no_grad():
        _, items = fdr_model.loss(batch, fdr_model(batch["img"]))
    assert set(items) <= set(train_items) and torch.isfinite(torch.stack(list(items.values()))).all()


def test_a_few_steps_lower_the_criterion_on_a_fixed_batch(fdr_model):
    """Fine-tuning with the head's criterion: a few optimizer steps on one batch lower its loss."""
    torch.manual_seed(0)
    fdr_model.train()
    batch = _batch(*BATCH)
    opt = torch.optim.AdamW(fdr_model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(1)  # the same denoising noise every step
        loss, _ = fdr_model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_stock_models_keep_the_stock_loss_and_deim_swaps_only_the_class_term(tmp_path):
    from ultralytics.models.utils.loss import RTDETRDetectionLoss
    from ultralytics.nn.tasks import RTDETRDetectionModel

    text = (ROOT / "cfg" / "models" / "rtdetr-effvit.yaml").read_text()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "rtdetr-effvit.yaml").write_text(text)
    (tmp_path / "b" / "rtdetr-effvit.yaml").write_text("criterion: deim\n" + text)
    batch = _batch(*BATCH)
    out = {}
    for key in ("a", "b"):
        torch.manual_seed(0)
        model = RTDETRDetectionModel(str(tmp_path / key / "rtdetr-effvit.yaml"), nc=3, verbose=False).train()
        model.nc = 3  # the trainer sets it (the stock loss reads it)
        torch.manual_seed(1)
        loss, items = model.loss(batch)
        out[key] = (model.criterion, items)
    assert type(out["a"][0]) is RTDETRDetectionLoss  # stock YAML: the host's own class
    assert type(out["b"][0]) is not RTDETRDetectionLoss and isinstance(out["b"][0], RTDETRDetectionLoss)
    assert set(out["a"][1]) == set(out["b"][1])  # same logged names
    assert torch.allclose(out["a"][1]["l1_loss"], out["b"][1]["l1_loss"])  # same matching, same boxes
    assert not torch.allclose(out["a"][1]["cls_loss"], out["b"][1]["cls_loss"])  # MAL, not VFL


@pytest.mark.parametrize("criterion", ["rtdetr", "deim"])
def test_class_gain_scales_the_class_terms_only(tmp_path, criterion):
    """``class_gain:`` weighs the classification terms of the stock loss and of its MAL form (encoder, decoder
    layers, denoising) by the gain, leaves the box terms and the matching alone, and reaches ``hybrid:``'s group."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from yolo_plugins.host.rtdetr_loss import extra_losses

    d = yaml.safe_load((ROOT / "cfg" / "models" / "rtdetr-effvit.yaml").read_text())
    out = {}
    for gain in (1.0, 3.0):
        d.update(criterion=criterion, class_gain=gain, hybrid=1.0)
        path = tmp_path / f"{gain}" / "rtdetr-effvit.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        torch.manual_seed(0)
        model = RTDETRDetectionModel(str(path), nc=3, verbose=False).train()
        model.nc = 3  # the trainer sets it (the stock loss reads it)
        torch.manual_seed(1)  # the same denoising noise
        loss, items = model.loss(_batch(*BATCH))
        hybrid = extra_losses(model)[0]
        out[gain] = (loss, items, model.criterion.loss_gain, hybrid.criterion.loss_gain)
    (loss_1, items_1, gains_1, hybrid_1), (loss_3, items_3, gains_3, hybrid_3) = out[1.0], out[3.0]
    assert gains_1["class"] == hybrid_1["class"] == 1.0 and gains_3["class"] == hybrid_3["class"] == 3.0
    assert {k: v for k, v in gains_1.items() if k != "class"} == {k: v for k, v in gains_3.items() if k != "class"}
    assert items_1["cls_loss"] > 0 and torch.allclose(items_3["cls_loss"], 3 * items_1["cls_loss"], rtol=1e-5)
    for name in ("giou_loss", "l1_loss"):  # same matching, same boxes
        assert torch.allclose(items_3[name], items_1[name], rtol=1e-5), name
    assert loss_3 > loss_1


@pytest.mark.parametrize(
    ("value", "yaml_name", "message"),
    [
        (-1, "rtdetr-effvit.yaml", "class_gain must be a gain >= 0"),
        (True, "rtdetr-effvit.yaml", "class_gain must be a gain >= 0 .*got True"),
        ("high", "rtdetr-effvit.yaml", "got 'high'"),
        (2.0, "yolov10-effvit.yaml", "class_gain: 2.0 trains RT-DETR heads .* remove the class_gain key"),
        (2.0, "dfine-n.yaml", "FDRDecoder .* trains with its own criterion: remove the class_gain key"),
    ],
)
def test_a_bad_class_gain_fails_when_the_model_is_built(tmp_path, value, yaml_name, message):
    with pytest.raises(ValueError, match=message):
        build_with_key(tmp_path, yaml_name, "class_gain", value)


@pytest.mark.parametrize(
    ("key", "yaml_name", "message"),
    [
        ("criterion: focal", "rtdetr-effvit.yaml", "criterion must be one of rtdetr, deim, dfine, got 'focal'"),
        ("criterion: dfine", "rtdetr-effvit.yaml", "criterion: dfine does not apply to PeakDecoder"),
        ("criterion: rtdetr", "dfine-n.yaml", "criterion: rtdetr does not apply to FDRDecoder"),
        ("criterion: deim", "yolov10-effvit.yaml", "trains RT-DETR heads"),
    ],
)
def test_a_criterion_the_head_cannot_use_fails_when_the_model_is_built(tmp_path, key, yaml_name, message):
    with pytest.raises(ValueError, match=message):
        build_with_key(tmp_path, yaml_name, "criterion", key.split(": ")[1])


def write_with_key(tmp_path: Path, yaml_name: str, key: str, value: object) -> Path:
    """The zoo YAML ``yaml_name`` with the top-level ``key: value`` set, written under ``tmp_path``."""
    d = yaml.safe_load((ROOT / "cfg" / "models" / yaml_name).read_text())
    d[key] = value
    path = tmp_path / yaml_name
    path.write_text(yaml.safe_dump(d))
    return path


def build_with_key(tmp_path: Path, yaml_name: str, key: str, value: object):
    """The zoo YAML ``yaml_name`` with the top-level ``key: value`` set, built as a model."""
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(str(write_with_key(tmp_path, yaml_name, key, value)), verbose=False)


def assert_train_logs(tiny_data: str, tmp_path: Path, yaml_text: str, names: tuple[str, ...]) -> None:
    """A tiny ``yolo train`` of ``yaml_text``: each of ``names`` is a train and a val results.csv column, and the
    first row is finite."""
    from ultralytics import RTDETR

    path = tmp_path / "model.yaml"
    path.write_text(yaml_text)
    RTDETR(str(path)).train(data=tiny_data, project=str(tmp_path), name="t", **TINY_TRAIN)
    header, row = (tmp_path / "t" / "results.csv").read_text().splitlines()[:2]
    columns = [c.strip() for c in header.split(",")]
    for name in names:
        assert f"train/{name}" in columns and f"val/{name}" in columns, columns
    assert np.isfinite([float(v) for v in row.split(",")[1:]]).all()


def test_yolo_train_logs_the_criterion_terms_by_name(tiny_data, tmp_path):
    """A tiny ``yolo train`` of a DEIM-trained head: the terms are results.csv columns, train and val, finite."""
    terms = ("mal_loss", "l1_loss", "giou_loss", "fgl_loss", "ddf_loss")
    assert_train_logs(tiny_data, tmp_path, "criterion: deim\n" + EFFVIT_HEAD, terms)


@pytest.mark.parametrize("name", ["dfine_n", "deimv2_atto"])
def test_fine_tuning_a_converted_official_checkpoint_lowers_its_criterion(name, tmp_path):
    """A converted official file (the fixture's seeded weights, official layout) fine-tuned for a few steps on one
    batch with its YAML's criterion (D-FINE-N: VFL, DEIMv2-Atto: MAL): the loss goes down, every term finite."""
    import official_fixture as fx
    from ultralytics import RTDETR

    from yolo_plugins.commands.import_weights import import_weights

    meta, _ = fx.load(name, fx.FIXTURES_DFINE)
    source = tmp_path / f"{name}_coco.pth"
    torch.save({"model": fx.release_state_dict(meta)}, source)
    net = RTDETR(str(import_weights(source, tmp_path / f"{name}.pt")[0])).model.float().train()
    for p in net.parameters():
        p.requires_grad_(True)  # a loaded checkpoint comes frozen for inference
    g = torch.Generator().manual_seed(0)
    batch = {**_batch(*BATCH, size=160), "img": torch.rand(2, 3, 160, 160, generator=g)}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    losses = []
    for _ in range(6):
        torch.manual_seed(1)  # the same denoising noise every step
        loss, items = net.loss(batch)
        assert all(torch.isfinite(v) for v in items.values()), items
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    kind = "vfl" if name == "dfine_n" else "mal"
    assert f"{kind}_loss" in items and net.criterion.cls == kind
    assert all(b < a for a, b in zip(losses, losses[1:])), losses  # every step lowers it
