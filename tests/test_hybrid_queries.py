"""``hybrid:`` in an RT-DETR YAML: a one-to-many group of decoder queries in training (H-DETR's hybrid matching).

The group's terms are added to the model's criterion and logged by name; the head, its weights and inference are
unchanged; bad values fail when the model is built."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from test_dense_anchors import DEFAULT, _default, assert_adds_only, steps
from test_training_loss import BATCH, _batch, assert_train_logs, build_with_key

HYB = ("hyb_class", "hyb_giou", "hyb_l1")


def test_repeated_targets_keep_images_in_order():
    from yolo_plugins.blocks.hybrid_queries import repeated

    targets = {
        "cls": torch.tensor([2, 0, 1]),
        "bboxes": torch.tensor([[0.1] * 4, [0.2] * 4, [0.3] * 4]),
        "batch_idx": torch.tensor([0, 0, 1]),
        "gt_groups": [2, 1],
    }
    out = repeated(targets, 3)
    assert out["batch_idx"].tolist() == [0] * 6 + [1] * 3 and out["gt_groups"] == [6, 3]
    assert out["cls"].tolist() == [2, 0, 2, 0, 2, 0, 1, 1, 1]
    assert torch.equal(out["bboxes"][:, 0], torch.tensor([0.1, 0.2] * 3 + [0.3] * 3))


def test_hybrid_adds_its_named_terms_to_the_stock_loss_and_nothing_else(tmp_path):
    assert_adds_only(tmp_path, "hybrid: 1.0", HYB)


def test_the_group_has_its_queries_and_every_object_repeated(tmp_path):
    """The second pass: ``queries`` queries from every decoder layer and the encoder's top-k, no denoising, scored
    against each object ``repeats`` times, never more queries than the image has anchors; the head keeps its own
    query count and no hook."""
    from yolo_plugins.blocks.hybrid_queries import HybridQueryLoss
    from yolo_plugins.host.rtdetr_loss import EXTRA_LOSSES, targets_of

    model = _default(tmp_path, "hybrid: [2.0, 3, 40]")
    head = model.model[-1]
    model.loss(_batch(*BATCH))  # builds the group's loss
    hybrid = EXTRA_LOSSES[model]["hybrid"][1]
    seen = {}
    original = hybrid.criterion.forward

    def spy(preds, batch, **kwargs):
        seen["preds"], seen["batch"], seen["kwargs"] = preds, batch, kwargs
        seen["losses"] = original(preds, batch, **kwargs)
        return seen["losses"]

    hybrid.criterion.forward = spy
    _, items = model.loss(_batch(*BATCH))
    bboxes, scores = seen["preds"]
    assert bboxes.shape == (4, 2, 40, 4) and scores.shape == (4, 2, 40, 3)  # encoder top-k + 3 decoder layers
    assert seen["kwargs"] == {}  # no denoising group in this pass
    assert seen["batch"]["gt_groups"] == [n * 3 for n in (2, 1)]
    assert (hybrid.gain, hybrid.repeats, hybrid.queries) == (2.0, 3, 40)
    for logged, term in (("hyb_class", "loss_class"), ("hyb_giou", "loss_giou"), ("hyb_l1", "loss_bbox")):
        parts = [v for k, v in seen["losses"].items() if k.startswith(term)]  # last layer, aux layers (dn: zero)
        assert torch.allclose(items[logged], 2.0 * sum(parts).detach()), logged  # x gain
    assert head.num_queries == 50 and not head._forward_pre_hooks
    wide = HybridQueryLoss(hybrid.criterion, queries=1000)  # more than a 128 px image's 16x16 + 8x8 + 4x4 anchors
    batch = _batch(*BATCH)
    with wide.capture(head):
        model.predict(batch["img"], batch=targets_of(batch))
    wide(head, targets_of(batch))
    # as many as there are (newer hosts clamp top-k themselves; the oldest does not: test_host_compat trains there)
    assert seen["preds"][0].shape == (4, 2, 336, 4) and head.num_queries == 50


def test_the_group_trains_the_decoder_and_the_backbone(tmp_path):
    """The group's terms alone send gradients to the decoder's heads and layers and down into the backbone."""
    from yolo_plugins.blocks.hybrid_queries import HybridQueryLoss
    from yolo_plugins.host.rtdetr_loss import targets_of

    model = _default(tmp_path, "")
    batch = _batch(*BATCH)
    hybrid = HybridQueryLoss(model.init_criterion(), repeats=4, queries=100)  # the host's RT-DETR loss
    head = model.model[-1]
    with hybrid.capture(head):
        model.predict(batch["img"], batch=targets_of(batch))
    sum(hybrid(head, targets_of(batch)).values()).backward()
    for name in ("dec_score_head", "dec_bbox_head", "decoder", "enc_score_head"):
        grads = [p.grad for p in getattr(head, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.model[0].parameters())
    with pytest.raises(RuntimeError, match="no head input was captured"):
        hybrid(head, targets_of(batch))


def test_background_only_batch_validation_and_a_few_steps(tmp_path):
    """No box: finite, trains. Validation scores the same names on the images given. Six AdamW steps on one batch
    lower the group's terms; the checkpoint carries no loss object."""
    model = _default(tmp_path, "hybrid: 1.0")
    loss, items = model.loss(_batch([], [], []))
    assert torch.isfinite(loss) and all(k in items for k in HYB)
    loss.backward()
    batch = _batch(*BATCH)
    terms = steps(model, batch, HYB)
    assert terms[-1] < 0.8 * terms[0], terms
    model.eval()
    with torch.no_grad():
        _, val = model.loss(batch, model(batch["img"]))
        other = {**batch, "img": batch["img"].flip(-1)}
        _, flipped = model.loss(other, model(other["img"]))
    assert list(val) == list(items) and torch.isfinite(torch.stack(list(val.values()))).all()
    assert not torch.allclose(val["hyb_class"], flipped["hyb_class"])
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(model).half(), buffer)
    assert b"HybridQueryLoss" not in buffer.getvalue()


def test_learnt_queries_are_refused_with_the_fix(tmp_path):
    model = _default(tmp_path, "hybrid: 1.0")
    model.model[-1].learnt_init_query = True  # as if the YAML row had set it
    with pytest.raises(ValueError, match="hybrid: needs .*learnt_init_query False.*set learnt_init_query to False"):
        model.loss(_batch(*BATCH))


def test_hybrid_and_o2m_together_and_a_training_forward_apart_is_refused(tmp_path):
    from yolo_plugins.host.rtdetr_loss import targets_of

    model = _default(tmp_path, "{o2m: 1.0, hybrid: 1.0}")
    batch = _batch(*BATCH)
    loss, items = model.loss(batch)
    assert [k for k in items if k.startswith(("o2m", "hyb"))] == ["o2m_class", "o2m_giou", "o2m_l1", *HYB]
    preds = model.predict(batch["img"], batch=targets_of(batch))
    with pytest.raises(RuntimeError, match="o2m and hybrid: .* remove the o2m and hybrid key"):
        model.loss(batch, preds)


@pytest.mark.parametrize(
    ("value", "yaml_name", "message"),
    [
        (-1, "rtdetr-effvit.yaml", "hybrid must be a gain >= 0"),
        ([1.0, 0], "rtdetr-effvit.yaml", r"whole numbers >= 1, got \[1.0, 0\]"),
        ([1.0, 6, 2.5], "rtdetr-effvit.yaml", "got \\[1.0, 6, 2.5\\]"),
        ([1.0, 6, 300, 1], "rtdetr-effvit.yaml", "hybrid must be"),
        ([1.0], "rtdetr-effvit.yaml", "hybrid must be"),
        (True, "rtdetr-effvit.yaml", "got True"),
        ("groups", "rtdetr-effvit.yaml", "got 'groups'"),
        (1.0, "yolov10-effvit.yaml", "hybrid: 1.0 trains RT-DETR heads .* remove the hybrid key"),
        (1.0, "dfine-effvit.yaml", "FDRDecoder .* own criterion: remove the hybrid key"),
    ],
)
def test_a_bad_hybrid_fails_when_the_model_is_built(tmp_path, value, yaml_name, message):
    with pytest.raises(ValueError, match=message):
        build_with_key(tmp_path, yaml_name, "hybrid", value)


def test_yolo_train_logs_the_group_terms(tiny_data, tmp_path):
    """A tiny ``yolo train`` with ``hybrid:``: the group's terms are results.csv columns, train and val, finite."""
    assert_train_logs(tiny_data, tmp_path, "hybrid: 1.0\n" + DEFAULT, HYB)
