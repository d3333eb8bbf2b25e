"""``criterion:`` in a model YAML: which loss an RT-DETR model trains with in Ultralytics' trainer.

``RTDETRDetectionModel.loss`` is wrapped (one row of ``hook.patches``). A model without the key trains exactly as
before, except that a head which brings its own criterion (a head class with ``CRITERIA`` and ``build_criterion``,
e.g. ``FDRDecoder``) always trains with it. Values:

* ``rtdetr``: Ultralytics' RT-DETR loss (varifocal classification, L1 + GIoU, every layer matched on its own).
* ``deim``: DEIM's matchability-aware loss (MAL, gamma 1.5) in place of the varifocal one; on ``RTDETRDecoder``
  (the default model, ``rtdetr-l``) the stock loss with MAL, on ``FDRDecoder`` the D-FINE criterion with MAL.
* ``dfine``: the D-FINE criterion with the varifocal loss (``FDRDecoder`` only).

DEIM's other half, dense one-to-one matching, is data: mosaic and mix-up for the early epochs, off at the end. That
is Ultralytics' ``mosaic=``, ``mixup=`` and ``close_mosaic=`` (docs/training-deim.md).

``o2m: gain`` (or ``[gain, topk]``) adds, with any criterion, one-to-many supervision of the encoder's anchors
(``blocks.dense_anchors``: YOLO-style task-aligned targets on every anchor, training only; logged as ``o2m_*``).
``hybrid: gain`` (or ``[gain, repeats, queries]``) adds, on ``RTDETRDecoder``, a one-to-many group of decoder
queries in training (``blocks.hybrid_queries``: H-DETR's hybrid matching, every object repeated ``repeats`` times,
default 6, for ``queries`` top-k proposals, default ``repeats`` x the head's queries; logged as ``hyb_*``).
``class_gain: gain`` sets the classification term's gain of the stock loss and its MAL form (Ultralytics' 1; the
matching costs are unchanged), for every term it weighs: the encoder's selection, each decoder layer, the denoising
groups and ``hybrid:``'s group. The default model sets 2 (docs/benchmarks/learning/class-gain-screen.md).
The keys are checked when the model is built (``check``), so a wrong value fails before the first epoch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from typing import Any, Callable

import torch

from .yaml_numbers import is_count, is_number

CRITERIA = ("rtdetr", "deim", "dfine")
O2M_TOPK = 2
HYBRID_REPEATS = 6  # H-DETR's
EXTRA_LOSSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: (setting, its extra loss)},
# kept off the model so that checkpoints and EMA copies do not carry them
STOCK_HEAD_CRITERIA = ("rtdetr", "deim")


def stock_mal_loss(nc: int) -> Any:
    """Ultralytics' RT-DETR loss with MAL as its classification term (same names, gains and matching)."""
    from ultralytics.models.utils.loss import RTDETRDetectionLoss

    from ..blocks.dfine.criterion import mal

    class RTDETRMALLoss(RTDETRDetectionLoss):
        def _get_loss_class(self, pred_scores, targets, gt_scores, num_gts, postfix=""):
            bs, nq = pred_scores.shape[:2]
            one_hot = torch.zeros((bs, nq, self.nc + 1), dtype=torch.int64, device=targets.device)
            one_hot.scatter_(2, targets.unsqueeze(-1), 1)
            one_hot = one_hot[..., :-1].float()
            quality = gt_scores.view(bs, nq, 1) * one_hot
            loss = mal(pred_scores, quality, one_hot) / (max(num_gts, 1) / nq)
            return {f"loss_class{postfix}": loss.squeeze() * self.loss_gain["class"]}

    return RTDETRMALLoss(nc=nc, use_vfl=True)


def head_criteria(head_cls: type) -> tuple[str, ...] | None:
    """The ``criterion:`` values an RT-DETR head class accepts (first: its default); None for a non-RT-DETR head."""
    from ultralytics.nn.modules.head import RTDETRDecoder

    if not (isinstance(head_cls, type) and issubclass(head_cls, RTDETRDecoder)):
        return None
    return tuple(getattr(head_cls, "CRITERIA", STOCK_HEAD_CRITERIA))


def _gain(value: Any) -> bool:
    return is_number(value) and value >= 0


def class_gain_setting(value: Any) -> float:
    """``class_gain:`` as a float: a number >= 0; ValueError naming the key otherwise."""
    if not _gain(value):
        raise ValueError(f"model YAML: class_gain must be a gain >= 0 (e.g. class_gain: 2.0), got {value!r}")
    return float(value)


def class_gained(criterion: Any, model: Any) -> Any:
    """``criterion`` (the stock RT-DETR loss or its MAL form) with ``model``'s YAML ``class_gain:`` as its
    classification gain; unchanged without the key."""
    value = (getattr(model, "yaml", None) or {}).get("class_gain")
    if value is not None:
        criterion.loss_gain = {**criterion.loss_gain, "class": class_gain_setting(value)}
    return criterion


def o2m_setting(value: Any) -> tuple[float, int]:
    """``o2m:`` as (gain, topk): a number >= 0 (topk 2) or ``[gain, topk]``; ValueError naming the key otherwise."""
    gain, topk = (value, O2M_TOPK) if not isinstance(value, (list, tuple)) else (tuple(value) + (None,))[:2]
    if not (_gain(gain) and is_count(topk)) or (isinstance(value, (list, tuple)) and len(value) != 2):
        raise ValueError(
            f"model YAML: o2m must be a gain >= 0 (e.g. o2m: 1.0) or [gain, topk] with topk >= 1, got {value!r}"
        )
    return float(gain), topk


def hybrid_setting(value: Any) -> tuple[float, int, int | None]:
    """``hybrid:`` as (gain, repeats, queries or None for repeats x the head's): a number >= 0 or ``[gain, repeats]``
    or ``[gain, repeats, queries]``; ValueError naming the key otherwise."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, HYBRID_REPEATS]
    gain, repeats, queries = (items + [None, None])[:3]
    if not (2 <= len(items) <= 3 and _gain(gain) and is_count(repeats) and (queries is None or is_count(queries))):
        raise ValueError(
            "model YAML: hybrid must be a gain >= 0 (e.g. hybrid: 1.0), [gain, repeats] or [gain, repeats, queries] "
            f"with whole numbers >= 1, got {value!r}"
        )
    return float(gain), repeats, queries


def check(d: dict, namespace: dict) -> None:
    """Refuse a model dict's ``criterion:``, ``o2m:``, ``hybrid:`` or ``class_gain:`` that its head cannot train
    with, naming the value, the head and the fix."""
    keys = [key for key in ("criterion", "o2m", "hybrid", "class_gain") if d.get(key) is not None]
    if not keys:
        return
    value = d.get("criterion")
    if value is not None and value not in CRITERIA:
        raise ValueError(f"model YAML: criterion must be one of {', '.join(CRITERIA)}, got {value!r}")
    if d.get("o2m") is not None:
        o2m_setting(d["o2m"])
    if d.get("hybrid") is not None:
        hybrid_setting(d["hybrid"])
    if d.get("class_gain") is not None:
        class_gain_setting(d["class_gain"])
    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    name = rows[-1][2] if rows and isinstance(rows[-1], (list, tuple)) and len(rows[-1]) > 2 else None
    accepted = head_criteria(namespace.get(name) if isinstance(name, str) else None)
    if accepted is None:
        raise ValueError(
            f"model YAML: {keys[0]}: {d[keys[0]]} trains RT-DETR heads (RTDETRDecoder, FDRDecoder); the last layer "
            f"({len(rows) - 1}, {name}) is not one: remove the {keys[0]} key"
        )
    if value is not None and value not in accepted:
        raise ValueError(
            f"model YAML: criterion: {value} does not apply to {name} (layer {len(rows) - 1}); use one of "
            f"{', '.join(accepted)}"
        )
    for key in ("hybrid", "class_gain"):
        if d.get(key) is not None and hasattr(namespace.get(name), "build_criterion"):
            what = "RTDETRDecoder's query groups" if key == "hybrid" else "the stock RT-DETR loss's classification term"
            raise ValueError(
                f"model YAML: {key}: {d[key]} trains {what}; {name} (layer {len(rows) - 1}) trains with its own "
                f"criterion: remove the {key} key"
            )


def chosen(model: Any) -> str:
    """The criterion ``model`` trains with: its YAML's ``criterion:``, else its head's default, else ``rtdetr``."""
    value = (getattr(model, "yaml", None) or {}).get("criterion")
    return value or (head_criteria(type(model.model[-1])) or STOCK_HEAD_CRITERIA)[0]


def named_items(original: Callable) -> bool:
    """Whether the host's RT-DETR loss returns its logged terms as a dict by name (newer 8.4 releases: the trainer
    takes the column names from it) rather than a tensor for fixed ``giou_loss, cls_loss, l1_loss`` columns."""
    try:
        return '"giou_loss"' in inspect.getsource(original)
    except (OSError, TypeError):  # no source: assume the newest contract
        return True


def wrap_rtdetr_loss(original: Callable) -> Callable:
    """``RTDETRDetectionModel.loss`` that trains with the model's ``criterion:`` (stock when nothing is chosen).

    On a host whose trainer has three fixed loss columns, a head's own criterion reports its GIoU, classification and
    L1 terms in them (the other terms still count in the loss)."""
    named = named_items(original)

    @functools.wraps(original)
    def loss(self, batch: dict, preds: Any = None) -> Any:
        head = self.model[-1]
        extras = extra_losses(self)
        if not extras:
            return criterion_loss(self, batch, preds)
        img, targets = batch["img"], targets_of(batch)
        with contextlib.ExitStack() as capturing:
            for extra in extras:
                capturing.enter_context(extra.capture(head))
            if preds is None:  # training: the forward the criterion scores, recorded
                preds = self.predict(img, batch=targets)
            elif self.training:  # compile=True: the trainer ran the forward apart, the dense terms cannot reach it
                keys = " and ".join(k for k in ("o2m", "hybrid") if self.yaml.get(k) is not None)
                raise RuntimeError(
                    f"{keys}: in the model YAML needs the loss to run the training forward, which compile=True does "
                    f"apart; train with compile=False or remove the {keys} key"
                )
            else:  # validation: the same weights on the same images again, to score their anchors
                with torch.no_grad():
                    self.predict(img)
        total, items = criterion_loss(self, batch, preds, targets)
        terms = {}
        for extra in extras:
            terms.update(extra(head, targets, tuple(img.shape[2:])))
        total = total + sum(terms.values())
        if isinstance(items, dict):
            items = {**items, **{k: v.detach() for k, v in terms.items()}}
        return total, items

    def criterion_loss(self, batch: dict, preds: Any, targets: dict | None = None) -> Any:
        head = self.model[-1]
        name = chosen(self)
        own = hasattr(head, "build_criterion")
        if not own and name == "rtdetr":
            if (getattr(self, "yaml", None) or {}).get("class_gain") is not None:
                if getattr(self, "criterion", None) is None:  # the host's criterion, built as the host would
                    self.criterion = self.init_criterion()
                class_gained(self.criterion, self)
            return original(self, batch, preds)
        if getattr(self, "criterion", None) is None or getattr(self, "_criterion_name", None) != name:
            self.criterion = head.build_criterion(name, head.nc) if own else stock_mal_loss(head.nc)
            self._criterion_name = name
        if not own:  # the stock computation with MAL as its classification term
            class_gained(self.criterion, self)
            return original(self, batch, preds)
        targets = targets if targets is not None else targets_of(batch)
        if preds is None:
            preds = self.predict(batch["img"], batch=targets)
        out = head.criterion_inputs(preds if self.training else preds[1])
        total, items = self.criterion(out, targets)
        if not named:
            giou, cls, l1 = items["giou_loss"], next(iter(items.values())), items["l1_loss"]
            return total, torch.stack([giou, cls, l1])
        return total, items

    return loss


def targets_of(batch: dict) -> dict:
    """A trainer batch as the targets of Ultralytics' RT-DETR losses (and its decoder's denoising groups)."""
    img, batch_idx = batch["img"], batch["batch_idx"]
    return {
        "cls": batch["cls"].to(img.device, dtype=torch.long).view(-1),
        "bboxes": batch["bboxes"].to(device=img.device),
        "batch_idx": batch_idx.to(img.device, dtype=torch.long).view(-1),
        "gt_groups": [(batch_idx == i).sum().item() for i in range(img.shape[0])],
    }


def extra_losses(model: Any) -> list:
    """The model's training-only extra losses its YAML asks for with a gain > 0, built once per setting: ``o2m:``'s
    ``DenseAnchorLoss``, ``hybrid:``'s ``HybridQueryLoss``."""
    yaml = getattr(model, "yaml", None) or {}
    head, out = model.model[-1], []
    o2m = o2m_setting(yaml["o2m"]) if yaml.get("o2m") is not None else None
    if o2m and o2m[0]:
        from ..blocks.dense_anchors import DenseAnchorLoss

        out.append(built(model, "o2m", o2m, lambda: DenseAnchorLoss(head.nc, *o2m)))
    hybrid = hybrid_setting(yaml["hybrid"]) if yaml.get("hybrid") is not None else None
    if hybrid and hybrid[0]:
        gain, repeats, queries = hybrid
        setting = (gain, repeats, queries or repeats * head.num_queries)
        out.append(built(model, "hybrid", setting, lambda: hybrid_loss(model, *setting)))
    return out


def built(model: Any, key: str, setting: tuple, build: Callable[[], Any]) -> Any:
    """``model``'s loss for the YAML ``key``, built by ``build`` on first use and again only when ``setting``
    changes; kept in ``EXTRA_LOSSES``, off the model."""
    kept = EXTRA_LOSSES.setdefault(model, {})
    if key not in kept or kept[key][0] != setting:
        kept[key] = (setting, build())
    return kept[key][1]


def hybrid_loss(model: Any, gain: float, repeats: int, queries: int) -> Any:
    """``hybrid:``'s loss, scored with the model's own criterion (the host's RT-DETR loss, or with ``criterion:
    deim`` its MAL form); ValueError for a head with learnt initial queries."""
    from ..blocks.hybrid_queries import HybridQueryLoss

    head = model.model[-1]
    if getattr(head, "learnt_init_query", False):
        raise ValueError(
            "model YAML: hybrid: needs RTDETRDecoder's queries taken from the encoder (learnt_init_query "
            "False); remove the hybrid key or set learnt_init_query to False"
        )
    criterion = stock_mal_loss(head.nc) if chosen(model) == "deim" else model.init_criterion()
    return HybridQueryLoss(class_gained(criterion, model), gain, repeats, queries)
