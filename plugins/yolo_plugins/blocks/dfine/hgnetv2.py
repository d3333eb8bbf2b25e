"""DEIMv2's three-stage HGNetV2 backbones (Atto, Femto, Pico) registered on timm's own HGNetV2 class.

timm ships ``hgnetv2_b0`` … ``b6`` (four stages). DEIMv2's smallest models use B0's stem with three stages:

* ``hgnetv2_pico``: B0's first three stages as they are (stage 3: 2 light blocks, kernel 5, 512 channels);
* ``hgnetv2_femto``: stage 3 with 1 block;
* ``hgnetv2_atto``: stage 3 with 1 block, kernel 3 and 256 channels.

They are timm models like any other (``timm.create_model('hgnetv2_pico', features_only=True, out_indices=[2])``, so
``TimmBackbone`` takes them by name): ``HGNetV2ThreeStage`` is timm's ``HighPerfGpuNet`` built with a throw-away fourth
stage that is removed at once, with its feature info and classifier head fitted to the third stage. No weights are
published for the classifiers; DEIMv2's detection checkpoints carry the backbone.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.hgnet import ClassifierHead, HighPerfGpuNet

B0_STEM = {"stem_type": "v2", "stem_chs": [16, 16]}
# in_chs, mid_chs, out_chs, blocks, downsample, light_block, kernel_size, layer_num (timm's stage config)
STAGES = {
    "hgnetv2_atto": (
        [16, 16, 64, 1, False, False, 3, 3],
        [64, 32, 256, 1, True, False, 3, 3],
        [256, 64, 256, 1, True, True, 3, 3],
    ),
    "hgnetv2_femto": (
        [16, 16, 64, 1, False, False, 3, 3],
        [64, 32, 256, 1, True, False, 3, 3],
        [256, 64, 512, 1, True, True, 5, 3],
    ),
    "hgnetv2_pico": (
        [16, 16, 64, 1, False, False, 3, 3],
        [64, 32, 256, 1, True, False, 3, 3],
        [256, 64, 512, 2, True, True, 5, 3],
    ),
}

# timm reads a module's default_cfgs when its models are registered: configs without weights (no hub id)
default_cfgs = generate_default_cfgs(
    {
        name: {
            "num_classes": 1000,
            "input_size": (3, 224, 224),
            "first_conv": "stem.stem1.conv",
            "classifier": "head.fc",
        }
        for name in STAGES
    }
)


class HGNetV2ThreeStage(HighPerfGpuNet):
    """timm's HGNetV2 with three stages (``cfg`` has ``stage1``..``stage3``)."""

    def __init__(
        self,
        cfg: dict,
        num_classes: int = 1000,
        global_pool: str = "avg",
        head_hidden_size: int | None = 2048,
        drop_rate: float = 0.0,
        use_lab: bool = False,
        **kwargs,
    ) -> None:
        out = cfg["stage3"][2]
        placeholder = [out, 16, out, 1, False, False, 3, 1]  # the smallest stage timm builds; removed below
        super().__init__(
            {**cfg, "stage4": placeholder},
            num_classes=num_classes,
            global_pool=global_pool,
            head_hidden_size=head_hidden_size,
            drop_rate=drop_rate,
            use_lab=use_lab,
            **kwargs,
        )
        self.stages = self.stages[:3]
        self.feature_info = self.feature_info[:3]
        self.num_features = out
        self.head = ClassifierHead(
            out, num_classes, pool_type=global_pool, drop_rate=drop_rate, hidden_size=head_hidden_size, use_lab=use_lab
        )
        self.head_hidden_size = self.head.num_features


def _create(variant: str, pretrained: bool = False, **kwargs) -> HGNetV2ThreeStage:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained classifier weights exist; DEIMv2 checkpoints carry the backbone")
    cfg = {**B0_STEM, **{f"stage{i + 1}": list(s) for i, s in enumerate(STAGES[variant])}}
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    return build_model_with_cfg(
        HGNetV2ThreeStage,
        variant,
        pretrained=False,
        model_cfg=cfg,
        feature_cfg={"flatten_sequential": True, "out_indices": out_indices},
        **kwargs,
    )


@register_model
def hgnetv2_atto(pretrained: bool = False, **kwargs) -> HGNetV2ThreeStage:
    """DEIMv2-Atto's backbone: B0's stem and stages 1-2, stage 3 of one kernel-3 block with 256 channels."""
    return _create("hgnetv2_atto", pretrained, use_lab=True, **kwargs)


@register_model
def hgnetv2_femto(pretrained: bool = False, **kwargs) -> HGNetV2ThreeStage:
    """DEIMv2-Femto's backbone: B0's stem and stages 1-2, stage 3 of one block (512 channels)."""
    return _create("hgnetv2_femto", pretrained, use_lab=True, **kwargs)


@register_model
def hgnetv2_pico(pretrained: bool = False, **kwargs) -> HGNetV2ThreeStage:
    """DEIMv2-Pico's backbone: B0's stem and first three stages."""
    return _create("hgnetv2_pico", pretrained, use_lab=True, **kwargs)
