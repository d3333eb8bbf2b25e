"""Multi-GPU worker processes stay covered by the plugin.

Ultralytics trains on several GPUs by pickling the trainer's state next to a generated Python file and launching that
file with ``torch.distributed.run``: every rank is a fresh interpreter that imports ``ultralytics`` but never
``yolo_plugins``, so only the start-up hook (``yolo_plugins.pth``) can make a plugin YAML parse there. CPU-only here:

* Ultralytics' own launch files (``generate_ddp_command`` / ``generate_ddp_file``) for an RT-DETR-EfficientViT trainer
  are run as Ultralytics runs them, with one process (with ``device=cpu`` Ultralytics never enters its DDP set-up,
  which is CUDA/NPU/XPU only, so the worker trains as a single process); with autoloading off the same launch fails.
* Two ranks of a gloo process group build the plugin model, wrap it in ``DistributedDataParallel`` and take one
  training step through the model's own loss, checking that DDP averages the gradients.

Every subprocess gets a timeout and only loopback addresses (TCP store on 127.0.0.1, gloo on ``lo``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODEL = "rtdetr-effvit-n.yaml"  # cfg/models/rtdetr-effvit.yaml at scale n, by the zoo-name form
ZOO = Path(__file__).parents[1] / "cfg" / "models" / "rtdetr-effvit.yaml"
TIMEOUT = 240  # seconds, per subprocess
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a launched worker: offline, own config folder, no plugin settings or stale DDP variables.

    ``PYTHONPATH`` is dropped too: nothing but the interpreter's own start-up may bring the plugin in.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("YOLO_PLUGINS_", "TORCHELASTIC_")) and k not in (*DIST_VARS, "PYTHONPATH")
    }
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "worker_config"), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def launch(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a launcher command with a timeout; stdout and stderr are merged into ``stdout``."""
    return subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT
    )


def ultralytics_ddp_command(model: str, data: str, tmp_path: Path, monkeypatch) -> tuple[list[str], Path, Path]:
    """Ultralytics' own DDP launch command for a one-epoch RT-DETR run of ``model``: (command, generated file, run dir).

    ``generate_ddp_command`` is what ``BaseTrainer.train`` calls for multi-GPU runs: it removes the run folder, writes
    the state + script through ``generate_ddp_file`` and picks a free port. With ``device=cpu`` the trainer's
    ``world_size`` is 0, which would give ``--nproc_per_node 0``; it is set to 1 (it is not part of the pickled state).
    """
    from ultralytics.models.rtdetr.train import RTDETRTrainer
    from ultralytics.utils import dist
    from ultralytics.utils.torch_utils import unset_deterministic

    monkeypatch.setattr(dist, "USER_CONFIG_DIR", tmp_path / "config")  # the launch files go here, not to ~/.config
    (tmp_path / "config").mkdir(exist_ok=True)
    overrides = dict(model=model, data=data, epochs=1, imgsz=64, batch=4, workers=0, device="cpu", seed=0)
    overrides.update(project=str(tmp_path / "runs"), name="ddp", plots=False)
    try:
        trainer = RTDETRTrainer(overrides=overrides)
    finally:
        unset_deterministic()  # the trainer's init_seeds(deterministic=True) must not leak into other tests
    assert trainer.model == model, "the trainer should hand the workers the YAML, to be parsed there"
    trainer.world_size = 1
    cmd, file = dist.generate_ddp_command(trainer)
    return cmd, Path(file), Path(trainer.save_dir)


def test_ultralytics_ddp_worker_trains_a_plugin_yaml(tiny_data, tmp_path, monkeypatch):
    """A worker started from Ultralytics' generated DDP file parses the plugin YAML, trains and saves plugin blocks."""
    from ultralytics.utils.patches import torch_load

    cmd, file, save_dir = ultralytics_ddp_command(MODEL, tiny_data, tmp_path, monkeypatch)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    assert cmd[5] == "--master_port" and cmd[7:] == [str(file)]  # torch.distributed.run's master address: 127.0.0.1
    state = torch_load(file.with_suffix(".pt"), map_location="cpu")
    assert state["model"] == MODEL and state["trainer"].__module__ == "ultralytics.models.rtdetr.train"
    assert not save_dir.exists()  # removed by generate_ddp_command, as before a real launch

    r = launch(cmd, worker_env(tmp_path, OMP_NUM_THREADS="2"), cwd=tmp_path)
    assert r.returncode == 0, f"DDP worker failed ({r.returncode}):\n{r.stdout[-4000:]}"
    assert "1 epochs completed" in r.stdout
    last = save_dir / "weights" / "last.pt"
    assert last.is_file(), f"no {last}:\n{r.stdout[-2000:]}"

    ckpt = torch_load(last, map_location="cpu")
    model = ckpt["model"]
    assert Path(ckpt["train_args"]["model"]).name == MODEL and model.yaml["scale"] == "n"
    first = type(model.model[0])
    assert first.__module__.startswith("yolo_plugins.") and first.__name__ == "EfficientViT"
    plugin_layers = [i for i, m in enumerate(model.model) if type(m).__module__.startswith("yolo_plugins.")]
    assert len(plugin_layers) >= 2, plugin_layers
    head = type(model.model[-1])  # the default's PeakDecoder, a plugin layer too, an RT-DETR head for the trainer
    assert head.__name__ == "RTDETRPeakDecoder" and head.__mro__[1].__name__ == "RTDETRDecoder" and model.nc == 6


def test_ultralytics_ddp_worker_without_the_startup_hook_fails(tiny_data, tmp_path, monkeypatch):
    """Control: with autoloading off the same kind of launch fails on the plugin block, so the hook is what works.

    The YAML is a copy given by path (Ultralytics finds the file without the plugin) so that the failure is the
    stock parser's: nothing in the generated file or the pickled state brings the plugin in by itself.
    """
    cfg = tmp_path / MODEL
    shutil.copy(ZOO, cfg)
    _, file, save_dir = ultralytics_ddp_command(str(cfg), tiny_data, tmp_path, monkeypatch)
    # The generated file run directly: what each one-process torch.distributed.run worker runs, minus the launcher.
    r = launch([sys.executable, str(file)], worker_env(tmp_path, YOLO_PLUGINS_AUTOLOAD="0"), cwd=tmp_path)
    assert r.returncode != 0, r.stdout[-2000:]
    assert "KeyError: 'EfficientViT'" in r.stdout, r.stdout[-4000:]
    assert not (save_dir / "weights" / "last.pt").exists()


STEP_SCRIPT = '''
"""One DDP training step of a plugin model on a rank-dependent batch; rank 0 writes every rank's findings."""
import json
import sys

autoload_only = "yolo_plugins_autoload" in sys.modules and "yolo_plugins" not in sys.modules

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ultralytics.nn.tasks import RTDETRDetectionModel  # the start-up hook activates the plugin here


def flat(tensors):
    return torch.cat([t.detach().flatten() for t in tensors])


def gather(t):
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return out


def fake_batch(rank, n=2, per_image=2, imgsz=64, nc=6):
    g = torch.Generator().manual_seed(100 + rank)
    xy = torch.rand(n * per_image, 2, generator=g) * 0.5 + 0.25
    wh = torch.rand(n * per_image, 2, generator=g) * 0.2 + 0.1
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(n).repeat_interleave(per_image).float(),
        "cls": torch.randint(0, nc, (n * per_image, 1), generator=g).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }


def main(cfg, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    import yolo_plugins

    torch.manual_seed(0)
    model = RTDETRDetectionModel(cfg, nc=6, verbose=False).train()
    model.nc = 6  # set by the trainer's set_model_attributes in Ultralytics; the loss reads it
    plugin = sorted({type(m).__module__ for m in model.modules() if type(m).__module__.startswith("yolo_plugins.")})
    p0 = flat(model.parameters())
    ddp = DistributedDataParallel(model, find_unused_parameters=True)  # as Ultralytics wraps its models
    batch = fake_batch(rank)

    def backward():
        torch.manual_seed(1000 + rank)  # the same denoising queries in both passes of a rank
        loss, _ = ddp(batch)  # a dict goes to model.loss, as in Ultralytics' training loop
        loss.sum().backward()

    def grads(module=model):
        return flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in module.parameters())

    with ddp.no_sync():  # this rank's own gradient, not reduced
        backward()
    local = grads()
    model.zero_grad(set_to_none=True)
    backward()  # reduced by DDP
    synced = grads()
    backbone = grads(model.model[0])  # the plugin's EfficientViT layer
    locals_, synceds, inits = gather(local), gather(synced), gather(p0)
    mean = torch.stack(locals_).mean(0)
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    p1 = flat(model.parameters())
    result = {
        "rank": rank,
        "world": world,
        "autoload_only_at_start": autoload_only,
        "active": yolo_plugins.is_active(),
        "scale": model.yaml.get("scale"),
        "plugin_modules": plugin,
        "same_init": all(torch.equal(p0, p) for p in inits),
        "local_grads_differ": not torch.equal(locals_[0], locals_[1]),
        "synced_equal": all(torch.equal(synced, g) for g in synceds),
        "synced_nonzero": int((synced != 0).sum()),
        "n_params": synced.numel(),
        "backbone": type(model.model[0]).__module__,
        "backbone_nonzero": int((backbone != 0).sum()),
        "rel_err_vs_mean": float((synced - mean).norm() / mean.norm()),
        "same_after_step": all(torch.equal(p1, p) for p in gather(p1)),
        "moved": float((p1 - p0).norm()),
    }
    results = [None] * world
    dist.all_gather_object(results, result)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    assert result["synced_equal"] and result["synced_nonzero"] > 0, result  # every rank checks itself too
    assert result["rel_err_vs_mean"] < 1e-4 and result["local_grads_differ"], result
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("zoo", [ZOO, ZOO.with_name("dfine-effvit.yaml")], ids=["rtdetr-loss", "dfine-criterion"])
def test_two_rank_ddp_step_averages_plugin_model_gradients(tmp_path, zoo):
    """Two gloo ranks build the plugin model via the hook alone; DDP gives both the mean of their own gradients
    (the stock RT-DETR loss, and the D-FINE head's own criterion with its cross-rank box count)."""
    script, out = tmp_path / "ddp_step.py", tmp_path / "result.json"
    script.write_text(textwrap.dedent(STEP_SCRIPT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(zoo), str(out)]
    r = launch(cmd, worker_env(tmp_path, GLOO_SOCKET_IFNAME="lo"), cwd=tmp_path)
    detail = out.read_text() if out.exists() else "no result file"
    assert r.returncode == 0, f"torch.distributed.run failed ({r.returncode}): {detail}\n{r.stdout[-4000:]}"
    results = json.loads(detail)
    assert [x["rank"] for x in results] == [0, 1] and all(x["world"] == 2 for x in results)
    for x in results:
        assert x["autoload_only_at_start"] and x["active"], x  # the script never imported yolo_plugins itself
        assert x["scale"] == "n" and "yolo_plugins.blocks.efficientvit" in x["plugin_modules"], x
        assert x["same_init"] and x["same_after_step"] and x["moved"] > 0, x
        assert x["local_grads_differ"] and x["synced_equal"], x  # rank-dependent batches, one averaged gradient
        # timm's EfficientViT zero-initialises the last BN of its residual branches (bn_weight_init=0), so at init
        # the weights inside those branches get exactly zero gradient: about 40 % of all entries are non-zero here.
        assert x["synced_nonzero"] > x["n_params"] // 5, x
        assert x["backbone"] == "yolo_plugins.blocks.efficientvit" and x["backbone_nonzero"] > 10_000, x
        assert x["rel_err_vs_mean"] < 1e-4, x
    assert results[0]["n_params"] == results[1]["n_params"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
