"""Cost of the start-up hook: interpreter start and ``import ultralytics``, with the plugin's autoload on and off.

    python benchmarks/startup.py [runs=15]

Each case is a fresh interpreter, timed end to end; the table shows medians and on/off ratios measured in one run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

CASES = {
    "interpreter start (python -c pass)": "pass",
    "import ultralytics": "import ultralytics",
    "import ultralytics + build yolov8n.yaml": "from ultralytics import YOLO; YOLO('yolov8n.yaml')",
}


def once(code: str, autoload: bool) -> float:
    """Wall time in ms of one fresh ``python -c code``."""
    env = {**os.environ, "YOLO_PLUGINS_AUTOLOAD": "1" if autoload else "0", "YOLO_OFFLINE": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000


def medians(code: str, runs: int) -> tuple[float, float]:
    """Median ms with autoload off and on, the two interleaved so that machine load hits both alike."""
    once(code, True)  # warm the file cache
    off, on = [], []
    for _ in range(runs):
        off.append(once(code, False))
        on.append(once(code, True))
    return statistics.median(off), statistics.median(on)


def main(argv: list[str]) -> None:
    runs = int(dict(a.split("=", 1) for a in argv).get("runs", 15))
    print("| case | autoload off (ms) | autoload on (ms) | on/off |\n|---|---:|---:|---:|")
    for name, code in CASES.items():
        off, on = medians(code, runs)
        print(f"| {name} | {off:.0f} | {on:.0f} | {on / off:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
