"""What naming the failing row costs when nothing fails: build and forward time with the naming on and off.

    python benchmarks/naming_cost.py [rounds=31] [imgsz=64] [threads=1]

Interleaves builds and forwards of ``rtdetr-effvit.yaml`` (n) and ``yolov10n.yaml`` with the plugin's forward-loop
wrappers, ``from`` check and output-channel check on, and with them switched off (``fuzz_rate.switch_off_naming``,
restored after each round), and prints medians and the ratio with the load average. The wrappers add one Python call
around the forward loop and a ``try`` block; the checks add a loop over the rows per build.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import typed_args  # noqa: E402


def main(argv: list[str]) -> int:
    opts = typed_args(argv, {"rounds": 31, "imgsz": 64, "threads": 1}, "naming_cost.py")
    import torch
    from ultralytics.nn import tasks

    import yolo_plugins
    from yolo_plugins.host import hook, layer_errors, parser_patch, yaml_rows

    torch.set_num_threads(opts["threads"])
    yolo_plugins.activate()
    saved = (yaml_rows.check_from, parser_patch._check_channels, layer_errors._text_where_a_number_belongs)
    loops = [p for p in hook._state["patches"] if p.attr in ("_predict_once", "predict")]

    def naming(on: bool) -> None:
        for p in loops:
            (p.apply if on else p.restore)()
        yaml_rows.check_from, parser_patch._check_channels = (
            saved[:2] if on else (lambda d: None, lambda frame, c2: None)
        )

    models = {"rtdetr-effvit.yaml": tasks.RTDETRDetectionModel, "yolov10n.yaml": tasks.DetectionModel}
    x = torch.zeros(1, 3, opts["imgsz"], opts["imgsz"])
    times: dict[tuple[str, str, bool], list[float]] = {}
    built = {}
    for r in range(opts["rounds"] + 1):
        for on in (True, False) if r % 2 else (False, True):
            naming(on)
            for name, cls in models.items():
                t = time.perf_counter()
                model = cls(name, nc=80, verbose=False).eval()
                build = time.perf_counter() - t
                built[name] = model
                with torch.no_grad():
                    model(x)  # warm-up of this instance
                    t = time.perf_counter()
                    for _ in range(5):
                        model(x)
                    fwd = (time.perf_counter() - t) / 5
                if r:  # round 0 is warm-up
                    times.setdefault((name, "build", on), []).append(build)
                    times.setdefault((name, "forward", on), []).append(fwd)
    naming(True)
    load = os.getloadavg()[0]
    print(
        f"medians of {opts['rounds']} interleaved rounds, {opts['imgsz']} px, {opts['threads']} thread(s), "
        f"load {load:.2f}"
    )
    print("| model | what | naming on (ms) | naming off (ms) | on / off |")
    print("|---|---|---:|---:|---:|")
    for name in models:
        for what in ("build", "forward"):
            on = statistics.median(times[(name, what, True)]) * 1e3
            off = statistics.median(times[(name, what, False)]) * 1e3
            print(f"| {name} | {what} | {on:.2f} | {off:.2f} | {on / off:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
