"""How many YAML mutants fail with an error that names their row, with the forward pass the fuzz test runs.

    python benchmarks/fuzz_rate.py                  # the fuzz test's mutants (same groups, counts and seeds)
    python benchmarks/fuzz_rate.py mode=before      # the same with this round's error naming switched off
    python benchmarks/fuzz_rate.py groups=size,cat_up forward=0

``mode=before`` switches off what names forward-time and row-level mistakes (the wrapped forward loops, the ``from``
check, the output-channel check, the text-argument detail), which is how the plugin behaved before them; everything
else is the same. Prints a table per group (built, named, unnamed, wrong layer, bad type) and the unnamed examples.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import typed_args  # noqa: E402  (the benchmarks' key=value rules)


def switch_off_naming() -> None:
    """Undo this round's forward-time and row-level error naming (the rest of the hook stays active)."""
    from ultralytics.nn import tasks

    from yolo_plugins.host import hook, layer_errors, parser_patch, yaml_rows

    for patch in hook._state["patches"]:
        if patch.attr in ("_predict_once", "predict"):
            patch.restore()
    yaml_rows.check_from = lambda d: None
    parser_patch._check_channels = lambda frame, c2: None
    layer_errors._text_where_a_number_belongs = lambda *a: None
    assert tasks.BaseModel._predict_once.__name__ == "_predict_once"


def measure(group: str, run_forward: bool) -> tuple[Counter, list[str]]:
    """Verdict counts of the fuzz test's mutants of ``group`` and the failing examples."""
    from hypothesis import Phase, given, seed, settings
    from yaml_mutants import GROUPS, judge, mutants

    _, count, fixed = GROUPS[group]
    counts: Counter = Counter()
    bad: list[str] = []

    @seed(fixed)
    @settings(max_examples=count, deadline=None, database=None, phases=(Phase.explicit, Phase.generate))
    @given(mutant=mutants(group))
    def run(mutant):
        verdict = judge(mutant, run_forward=run_forward)
        counts[verdict.category] += 1
        if not verdict.ok:
            bad.append(f"{mutant!r}\n    {verdict.category}: {verdict.error[:300]}")

    run()
    return counts, bad


def main(argv: list[str]) -> int:
    opts = typed_args(argv, {"mode": "after", "groups": "", "forward": True}, "fuzz_rate.py")
    import torch

    import yolo_plugins

    torch.set_num_threads(1)
    yolo_plugins.activate()
    if opts["mode"] == "before":
        switch_off_naming()
    from yaml_mutants import GROUPS

    groups = [g for g in opts["groups"].split(",") if g] or list(GROUPS)
    total: Counter = Counter()
    examples: list[str] = []
    start = time.perf_counter()
    print(
        f"| group | mutants | built | named | unnamed | wrong layer | bad type | named or built | mode={opts['mode']}"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for group in groups:
        counts, bad = measure(group, opts["forward"])
        total.update(counts)
        examples += bad
        n = sum(counts.values())
        ok = counts["built"] + counts["named"]
        print(
            f"| {group} | {n} | {counts['built']} | {counts['named']} | {counts['unnamed']} | {counts['wrong-layer']} "
            f"| {counts['bad-type']} | {ok / n:.1%} |",
            flush=True,
        )
    n = sum(total.values())
    ok = total["built"] + total["named"]
    print(
        f"| all | {n} | {total['built']} | {total['named']} | {total['unnamed']} | {total['wrong-layer']} "
        f"| {total['bad-type']} | {ok / n:.1%} |"
    )
    print(f"\n{time.perf_counter() - start:.0f} s")
    for line in examples:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
