"""``PeakDecoder``: inference picks queries among per-level score peaks; training and weights are RT-DETR's.

That it builds on every declared host and infers as the stock head where too few peaks exist is
``test_host_compat.py``'s (CI runs that file on the oldest release too)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_dense_anchors import DEFAULT, ROOT
from test_training_loss import BATCH, _batch

from yolo_plugins.blocks.peak_queries import RTDETRPeakDecoder, peak_ranking

DEFAULT_YAML = ROOT / "cfg" / "models" / "rtdetr-effvit.yaml"


def _pair(tmp_path, nc: int = 3):
    """The default model (``PeakDecoder``) and the same with the stock head, the same weights."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    assert DEFAULT.count("PeakDecoder, [nc") == 1 and "RTDETRDecoder, [nc" not in DEFAULT
    (tmp_path / "rtdetr-effvit.yaml").write_text(DEFAULT.replace("PeakDecoder, [nc", "RTDETRDecoder, [nc"))
    stock = RTDETRDetectionModel(str(tmp_path / "rtdetr-effvit.yaml"), nc=nc, verbose=False)
    peak = RTDETRDetectionModel(str(DEFAULT_YAML), nc=nc, verbose=False)
    assert type(peak.model[-1]) is RTDETRPeakDecoder
    assert list(peak.state_dict()) == list(stock.state_dict())  # same parameter names: weights load both ways
    peak.load_state_dict(stock.state_dict())
    stock.nc = peak.nc = nc  # the trainer sets it (the stock loss reads it)
    return stock, peak


def _selection(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Eval forward of ``model`` on ``x``: the encoder's top-k logits it selected, the raw logits its score head
    produced (seen by a forward hook) and the level shapes."""
    head = model.model[-1]
    seen = {}
    handle = head.enc_score_head.register_forward_hook(lambda m, a, out: seen.setdefault("raw", out.detach()))
    try:
        with torch.no_grad():
            _, (_, _, _, enc_scores, _) = model.eval()(x)
    finally:
        handle.remove()
    return enc_scores, seen["raw"], head.shapes


def _peaks(raw: torch.Tensor, shapes: list[list[int]]) -> torch.Tensor:
    """(B, N) mask of anchors whose best logit is the maximum of their 3 x 3 neighbourhood on their level (a loop)."""
    best = raw.max(-1).values
    mask = torch.zeros_like(best, dtype=torch.bool)
    start = 0
    for h, w in shapes:
        level = best[:, start : start + h * w].reshape(-1, h, w)
        for y in range(h):
            for x in range(w):
                window = level[:, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
                mask[:, start + y * w + x] = level[:, y, x] >= window.flatten(1).max(1).values
        start += h * w
    return mask


def test_peak_ranking_puts_each_levels_peaks_first_and_keeps_their_values():
    # image 0: a 3 x 3 level peaking at 9 (index 0) and 8 (index 8), then a 1 x 2 level peaking at 10 (index 9);
    # image 1: the same levels with one peak each (5 at index 8, 10 at index 10)
    first = [9.0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 0]
    second = [1.0, 2, 3, 2, 3, 4, 3, 4, 5, 0, 10]
    logits = torch.tensor([first, second]).unsqueeze(-1)
    shapes = [[3, 3], [1, 2]]
    ranked = peak_ranking(logits, shapes, k=3)
    assert sorted(ranked[0, :, 0].topk(3).indices.tolist()) == [0, 8, 9]  # not 7 (7.0), the stock top-3's third
    assert torch.equal(ranked[0, [0, 8, 9]], logits[0, [0, 8, 9]])  # the peaks keep their logits
    assert (ranked[0, [1, 2, 3, 4, 5, 6, 7, 10]] < logits[0].min()).all()  # every other anchor ranks below them
    assert torch.equal(ranked[1], logits[1])  # two peaks for three queries: this image keeps RT-DETR's ranking
    assert torch.equal(peak_ranking(logits, shapes, k=4), logits)


def test_training_is_the_stock_heads(tmp_path):
    stock, peak = _pair(tmp_path)
    batch = _batch(*BATCH)
    out = []
    for model in (stock, peak):
        model.train()
        torch.manual_seed(1)  # the same denoising noise
        loss, items = model.loss(batch)
        loss.backward()
        out.append((loss.detach(), items, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, items_a, grads_a), (loss_b, items_b, grads_b) = out
    assert torch.equal(loss_a, loss_b) and loss_a > 0
    assert items_a.keys() == items_b.keys() and all(torch.equal(items_a[k], items_b[k]) for k in items_a)
    assert len(grads_a) == len(grads_b) > 0 and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_inference_selects_the_top_k_peaks_with_their_own_logits(tmp_path):
    stock, peak = _pair(tmp_path)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    enc_scores, raw, shapes = _selection(peak, x)
    mask = _peaks(raw, shapes)
    k = peak.model[-1].num_queries
    assert (mask.sum(1) >= k).all()  # enough peaks at 224 px: the peak selection applies
    best = raw.max(-1).values
    for b in range(2):
        want = best[b][mask[b]].topk(k).values
        assert torch.equal(enc_scores[b].max(-1).values.sort(descending=True).values, want)
    stock_scores, stock_raw, _ = _selection(stock, x)
    assert torch.equal(stock_raw, raw)  # the score head itself is untouched (hooks see the unranked logits)
    assert not torch.equal(stock_scores, enc_scores)  # and the stock head picked non-peaks among its top-k
    assert isinstance(peak.model[-1].enc_score_head, torch.nn.Linear)  # restored after the forward


def test_the_score_head_is_restored_when_the_forward_fails(tmp_path, monkeypatch):
    _, peak = _pair(tmp_path)
    head = peak.model[-1]
    linear = head.enc_score_head

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(F, "max_pool2d", boom)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        peak.eval()(torch.rand(1, 3, 224, 224))
    assert head.enc_score_head is linear and "enc_score_head" in dict(head.named_children())


def test_onnx_export_gives_the_same_detections(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ultralytics import RTDETR

    (tmp_path / "rtdetr-effvit.yaml").write_text(DEFAULT)  # the exporter writes beside the YAML
    model = RTDETR(str(tmp_path / "rtdetr-effvit.yaml"))
    path = model.export(format="onnx", imgsz=160)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model.model.eval()(x)
    want = want[0] if isinstance(want, (list, tuple)) else want
    assert got.shape == tuple(want.shape) == (1, 50, 6)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)
