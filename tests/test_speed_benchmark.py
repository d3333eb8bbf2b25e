"""benchmarks/speed.py: what it times must time like a trained model."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from ultralytics import RTDETR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import speed  # noqa: E402


def test_untie_makes_fresh_decoder_layers_distinct_and_biases_nonzero():
    """A fresh RT-DETR's decoder layers are copies (runtimes merged them); untied weights are all distinct."""
    fresh = RTDETR("cfg/models/rtdetr-effvit.yaml").model
    layers = fresh.model[-1].decoder.layers
    assert torch.equal(layers[0].cross_attn.value_proj.weight, layers[1].cross_attn.value_proj.weight)
    assert not layers[0].cross_attn.value_proj.bias.any()
    la = speed.build("cfg/models/rtdetr-effvit.yaml").model.model[-1].decoder.layers
    assert not torch.equal(la[0].cross_attn.value_proj.weight, la[1].cross_attn.value_proj.weight)
    assert la[0].cross_attn.value_proj.bias.abs().min() > 0
    a, b = copy.deepcopy(fresh), copy.deepcopy(fresh)
    speed.untie(a), speed.untie(b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # seeded noise


def test_host_suffix_fuses_without_the_deploy_forms():
    from yolo_plugins.profile.sweep import deployable

    def names(cfg: str) -> set[str]:
        with speed.forms(cfg):
            return {type(m).__name__ for m in deployable(speed.build(cfg).model).modules()}

    assert {"DeployDeformAttn", "DeployCascadedAttention"} <= names("cfg/models/rtdetr-effvit.yaml")
    host = names("cfg/models/rtdetr-effvit.yaml@host")
    assert "MSDeformAttn" in host and not any(n.startswith("Deploy") for n in host)
    assert [m.name for m in speed.models_from({"stock": "", "zoo": False, "models": "a.yaml,a.yaml@host"})] == [
        "a",
        "a-host-forms",
    ]


def test_repeats_give_the_spread_of_per_repeat_ratios():
    """``repeats=N``: each repeat's median over the baseline's median in the same repeat; repeats that did not time
    both models are left out."""
    assert speed.parse_args(["repeats=3"])["repeats"] == 3
    base, m = speed.Model("yolov10n", "yolov10n.yaml", "stock"), speed.Model("a", "a.yaml", "extra")
    base.medians = {"openvino": {320: {0: 10.0, 1: 12.0, 2: 8.0}}}
    m.medians = {"openvino": {320: {0: 9.0, 1: 12.6, 3: 1.0}}}  # repeat 3: no baseline; repeat 2: none of its own
    lo, hi = speed.ratio_range(m, base, "openvino", 320)
    assert (round(lo, 6), round(hi, 6)) == (0.9, 1.05)
    assert speed.ratio_range(m, base, "pytorch", 320) is None and speed.ratio_range(m, None, "openvino", 320) is None
    rows = speed.rows([base, m], {"sizes": [320], "runtimes": ["openvino"]}, "yolov10n")
    row = next(r for r in rows if r["model"] == "a")
    assert (row["repeats"], row["ratio_min"], row["ratio_max"]) == (3, 0.9, 1.05)


def test_cpu_model_names_family_model_and_vector_extensions():
    """Two machines with the same model name ("AMD EPYC") differ in speed and numerics: the name carries the family,
    model and vector extensions, without commas (headers quote it as one comma-separated field)."""
    zen4 = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    zen4 += "flags\t\t: sse avx2 avx512f avx512_vnni\n"
    zen3 = zen4.replace(": 17", ": 1").replace(" avx512f avx512_vnni", "")
    assert speed.cpu_model(zen4) == "AMD EPYC (family 25 model 17; AVX-512 VNNI)"
    assert speed.cpu_model(zen3) == "AMD EPYC (family 25 model 1; AVX2)"
    intel = "model name\t: Intel(R) Xeon(R), 2.1GHz\nflags\t\t: avx2 avx_vnni\n"
    assert speed.cpu_model(intel) == "Intel(R) Xeon(R)  2.1GHz (AVX2 VNNI)"
    # a second processor's lines do not override the first's
    assert speed.cpu_model(zen4 + "\nprocessor\t: 1\nmodel name\t: Other\n").startswith("AMD EPYC (")
