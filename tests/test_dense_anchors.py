"""``o2m:`` in an RT-DETR YAML: one-to-many (task-aligned) supervision of the encoder's anchors during training.

The dense terms are added to whatever criterion the model trains with and logged by name; inference, the model's
weights and its checkpoints are unchanged; bad values fail when the model is built."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
import yaml
from test_dfine_models import EFFVIT_HEAD, _model
from test_training_loss import BATCH, _batch, assert_train_logs, build_with_key

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (ROOT / "cfg" / "models" / "rtdetr-effvit.yaml").read_text()
O2M = ("o2m_class", "o2m_giou", "o2m_l1")


def _default(tmp_path: Path, key: str, nc: int = 3):
    from ultralytics.nn.tasks import RTDETRDetectionModel

    folder = tmp_path / str(abs(hash(key)))
    folder.mkdir(exist_ok=True)
    d = yaml.safe_load(DEFAULT)
    d.pop("o2m", None)
    if key:
        d.update(yaml.safe_load(key))
    (folder / "rtdetr-effvit.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    torch.manual_seed(0)
    model = RTDETRDetectionModel(str(folder / "rtdetr-effvit.yaml"), nc=nc, verbose=False).train()
    model.nc = nc  # the trainer sets it (the stock loss reads it)
    return model


def assert_adds_only(tmp_path: Path, key: str, names: tuple[str, ...]) -> None:
    """Same weights, same denoising noise: with the YAML ``key`` the loss is the stock loss plus exactly the terms
    ``names``, each finite and positive."""
    batch = _batch(*BATCH)
    out = {}
    for text in ("", key):
        model = _default(tmp_path, text)
        torch.manual_seed(1)
        out[text] = model.loss(batch)
    (stock_total, stock_items), (total, items) = out[""], out[key]
    assert list(items) == [*stock_items, *names]
    for k, v in stock_items.items():
        assert torch.allclose(items[k], v), k
    assert all(torch.isfinite(items[k]) and items[k] > 0 for k in names), items
    assert torch.allclose(total, stock_total + sum(items[k] for k in names), rtol=1e-5)


def test_o2m_adds_its_named_terms_to_the_stock_loss_and_nothing_else(tmp_path):
    assert_adds_only(tmp_path, "o2m: 1.0", O2M)


def test_the_dense_terms_train_every_anchor_head_and_the_backbone(tmp_path):
    """The dense terms alone send gradients to the encoder's score and box heads and down into the backbone."""
    from yolo_plugins.blocks.dense_anchors import DenseAnchorLoss
    from yolo_plugins.host.rtdetr_loss import targets_of

    model = _default(tmp_path, "")
    batch = _batch(*BATCH)
    dense = DenseAnchorLoss(nc=3)
    head = model.model[-1]
    with dense.capture(head):
        model.predict(batch["img"], batch=targets_of(batch))
    sum(dense(head, targets_of(batch), (128, 128)).values()).backward()
    for name, module in (("enc_score_head", head.enc_score_head), ("enc_bbox_head", head.enc_bbox_head)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.model[0].parameters())
    assert all(p.grad is None for p in head.dec_score_head.parameters())  # the decoder is not its business
    assert not head.enc_score_head._forward_hooks  # the capture left nothing behind


def test_positive_anchors_lie_inside_their_objects(tmp_path):
    """Task-aligned assignment: every anchor with a target has its centre inside that object's box, and each object
    gets at most ``topk`` anchors."""
    from yolo_plugins.blocks.dense_anchors import DenseAnchorLoss
    from yolo_plugins.host.rtdetr_loss import targets_of

    model = _default(tmp_path, "")
    batch = _batch(*BATCH)
    dense = DenseAnchorLoss(nc=3, topk=4)
    head = model.model[-1]
    seen = {}
    original = dense.assigner.forward

    def spy(*args):
        seen["args"], seen["out"] = args, original(*args)
        return seen["out"]

    dense.assigner.forward = spy
    with dense.capture(head):
        model.predict(batch["img"], batch=targets_of(batch))
    dense(head, targets_of(batch), (128, 128))
    _, _, points, _, gt_boxes, _ = seen["args"]
    _, tgt_boxes, _, fg, gt_idx = seen["out"]
    assert fg.sum() > 0
    for b in range(fg.shape[0]):
        p, box = points[fg[b]], tgt_boxes[b][fg[b]]
        assert ((p >= box[:, :2]) & (p <= box[:, 2:])).all()
        assert torch.bincount(gt_idx[b][fg[b]]).max() <= 4
    assert torch.allclose(gt_boxes[0, 0], torch.tensor([0.35, 0.35, 0.65, 0.65]) * 128)  # pixel xyxy, image 0 first


def test_background_only_batch_and_validation(tmp_path):
    """No box in the batch: only the dense "no object" term, finite, and it trains. In validation (the validator
    passes the eval forward) the same names are scored on the images given."""
    model = _default(tmp_path, "o2m: 1.0")
    loss, items = model.loss(_batch([], [], []))
    assert torch.isfinite(loss) and items["o2m_class"] > 0 and items["o2m_giou"] == 0 and items["o2m_l1"] == 0
    loss.backward()
    _, train_items = model.loss(_batch(*BATCH))
    model.eval()
    batch = _batch(*BATCH)
    with torch.no_grad():
        _, items = model.loss(batch, model(batch["img"]))
        other = {**batch, "img": batch["img"].flip(-1)}
        _, flipped = model.loss(other, model(other["img"]))
    assert list(items) == list(train_items) and torch.isfinite(torch.stack(list(items.values()))).all()
    assert not torch.allclose(items["o2m_class"], flipped["o2m_class"])  # scored on these images, not stale ones


def test_a_training_forward_run_apart_is_refused_with_the_fix(tmp_path):
    """``compile=True`` makes the trainer run the forward apart and pass it to the loss: the dense terms could not
    reach that graph, so the first step says so instead of training without them."""
    model = _default(tmp_path, "o2m: 1.0")
    batch = _batch(*BATCH)
    from yolo_plugins.host.rtdetr_loss import targets_of

    preds = model.predict(batch["img"], batch=targets_of(batch))
    with pytest.raises(RuntimeError, match="compile=True .* train with compile=False or remove the o2m key"):
        model.loss(batch, preds)


def steps(model, batch: dict, names: tuple[str, ...], n: int = 6) -> list[float]:
    """``n`` AdamW steps (lr 1e-3) on one batch, same denoising noise each time: the sum of the terms ``names``
    before each step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen = []
    for _ in range(n):
        torch.manual_seed(1)
        loss, items = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(float(sum(items[k] for k in names)))
    return seen


def test_a_few_steps_lower_the_dense_terms_and_checkpoints_stay_clean(tmp_path):
    model = _default(tmp_path, "o2m: [1.0, 6]")
    dense = steps(model, _batch(*BATCH), O2M)
    assert all(b < a for a, b in zip(dense, dense[1:])) and dense[-1] < 0.8 * dense[0], dense
    from yolo_plugins.host.rtdetr_loss import EXTRA_LOSSES

    assert EXTRA_LOSSES[model]["o2m"][1].topk == 6
    head = model.model[-1]
    assert not head.enc_score_head._forward_hooks and not any("o2m" in k for k in vars(model))
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(model).half(), buffer)  # what the trainer saves: the model, no loss object
    assert b"DenseAnchorLoss" not in buffer.getvalue()


def test_the_fdr_head_takes_o2m_too(tmp_path):
    model = _model("o2m: 1.0\n" + EFFVIT_HEAD, tmp_path).train()
    loss, items = model.loss(_batch(*BATCH))
    assert list(items)[-3:] == list(O2M) and "vfl_loss" in items and torch.isfinite(loss)


@pytest.mark.parametrize(
    ("value", "yaml_name", "message"),
    [
        (-1, "rtdetr-effvit.yaml", "o2m must be a gain >= 0"),
        ([1.0, 0], "rtdetr-effvit.yaml", r"\[gain, topk\] with topk >= 1, got \[1.0, 0\]"),
        ([1.0, 4, 2], "rtdetr-effvit.yaml", "o2m must be"),
        (True, "rtdetr-effvit.yaml", "got True"),
        ("dense", "rtdetr-effvit.yaml", "got 'dense'"),
        (1.0, "yolov10-effvit.yaml", "o2m: 1.0 trains RT-DETR heads .* remove the o2m key"),
    ],
)
def test_a_bad_o2m_fails_when_the_model_is_built(tmp_path, value, yaml_name, message):
    with pytest.raises(ValueError, match=message):
        build_with_key(tmp_path, yaml_name, "o2m", value)


def test_yolo_train_logs_the_dense_terms(tiny_data, tmp_path):
    """A tiny ``yolo train`` with ``o2m:``: the dense terms are results.csv columns, train and val, finite."""
    assert_train_logs(tiny_data, tmp_path, "o2m: 1.0\n" + DEFAULT, O2M)  # the default model, scale n
