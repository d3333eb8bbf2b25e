"""``yolo-plugins``: the project's console script.

yolo-plugins main-job [key=value ...]  train the default model on the embedded set, validate, predict test images
yolo-plugins list                      blocks the plugin registered (name, class, source, rule, fuse)
yolo-plugins profile model=... ...     the profile tool (same as ``python -m yolo_plugins.profile``)
yolo-plugins convert fork.yaml [-o native.yaml]   a fork-style YAML written as a native one (also model=... out=...)
yolo-plugins import-weights file.pth [-o out.pt] [family=DEIM]  an official RT-DETR, D-FINE or DEIM-D-FINE
                                                  checkpoint as an Ultralytics one (also weights=... out=...)
yolo-plugins slim best.pt queries=N [eval_idx=K] [-o out.pt]  a trained RT-DETR with fewer inference queries/layers
"""

from __future__ import annotations

import sys

USAGE = """usage: yolo-plugins <command> [key=value ...]

commands:
  main-job  train the default model on the embedded shapes set (~15 min on 2 CPU cores), validate, predict 8 test
            images; key=value overrides the recipe (any yolo train argument), predict=N
  list      the blocks the plugin registered
  profile   per-module params/GFLOPs table and the RT-DETR variant sweep (yolo-plugins profile help)
  convert   fork.yaml [-o native.yaml]: write a fork-style model YAML as a native one (or model=... out=...)
  import-weights  file.pth [-o out.pt] [family=D-FINE|DEIM]: an official RT-DETR / RT-DETRv2, D-FINE or
            DEIM-D-FINE checkpoint as an Ultralytics checkpoint of the matching zoo model (or weights=... out=...);
            family= says which of D-FINE / DEIM a file is when its name does not
  slim      best.pt queries=N [eval_idx=K] [-o out.pt]: a trained RT-DETR that keeps N queries (and reads decoder
            layer K) at inference, for faster CPU inference without retraining (docs/deploy-cpu.md)"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``yolo-plugins <command>``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "profile":
        from ..profile.__main__ import main as profile_main

        return profile_main(rest, prog="yolo-plugins profile")
    if cmd == "main-job":
        from .main_job import main as main_job

        return main_job(rest)
    if cmd == "convert":
        return _convert(rest)
    if cmd == "import-weights":
        return _import_weights(rest)
    if cmd == "slim":
        return _slim(rest)
    if cmd == "list":
        import yolo_plugins

        rows = yolo_plugins.registered()
        cols = ("name", "class", "source", "rule", "fuse")
        widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
        for r in rows:
            print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
        return 0
    print(f"yolo-plugins: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def file_and_output(
    args: list[str], key: str, extra: tuple[str, ...] = ()
) -> tuple[str, str | None] | tuple[str, str | None, dict[str, str]] | None:
    """``file [-o out]`` or ``key=file out=out`` -> ``(file, out or None)``; ``None`` when the arguments do not fit.

    With ``extra`` key names, those ``key=value`` options are accepted too and returned as a third item.
    """
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    more = {k: opts.pop(k) for k in extra if k in opts}
    plain = [a for a in args if "=" not in a]
    if "-o" in plain:
        k = plain.index("-o")
        if k + 1 >= len(plain):
            return None
        opts.setdefault("out", plain.pop(k + 1))
        plain.pop(k)
    name = opts.get(key) or (plain[0] if plain else None)
    if name is None or len(plain) > (0 if key in opts else 1) or set(opts) - {key, "out"}:
        return None
    return (name, opts.get("out"), more) if extra else (name, opts.get("out"))


def _convert(args: list[str]) -> int:
    """``convert fork.yaml [-o native.yaml]`` or ``convert model=fork.yaml out=native.yaml``."""
    from .convert import convert_file

    parsed = file_and_output(args, key="model")
    if parsed is None:
        print("usage: yolo-plugins convert fork.yaml [-o native.yaml]", file=sys.stderr)
        return 2
    model, out = parsed
    try:
        target, changes = convert_file(model, out)
    except (OSError, ValueError) as e:
        print(f"yolo-plugins convert: {e}", file=sys.stderr)
        return 1
    print(f"{model} -> {target}")
    for line in changes:
        print(f"  {line}")
    return 0


def _import_weights(args: list[str]) -> int:
    """``import-weights file.pth [-o out.pt]`` or ``import-weights weights=file.pth out=out.pt``."""
    parsed = file_and_output(args, key="weights", extra=("family",))
    if parsed is None:
        print(
            "usage: yolo-plugins import-weights <official .pth> [-o out.pt] [family=D-FINE|DEIM]   "
            "(or weights=... out=...)",
            file=sys.stderr,
        )
        return 2
    from .import_weights import import_weights

    path, out, more = parsed
    try:
        target, official, loaded, total = import_weights(path, out, more.get("family"))
    except (OSError, ValueError) as e:
        print(f"yolo-plugins import-weights: {e}", file=sys.stderr)
        return 1
    print(f"{path}: {official}")
    print(f"loaded {loaded}/{total} tensors")
    print(f"wrote {target}  (yolo predict model={target} source=...; in Python: RTDETR('{target}'))")
    if "rtdetr" not in target.name.lower():
        print(f"note: the yolo command picks RT-DETR for model files whose name contains 'rtdetr'; rename {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _slim(args: list[str]) -> int:
    """``slim best.pt queries=N [eval_idx=K] [-o out.pt]`` (or ``model=best.pt``)."""
    from .slim import slim

    numbers = {}
    for key in ("queries", "eval_idx"):
        found = [a for a in args if a.startswith(f"{key}=")]
        for a in found:
            args = [x for x in args if x != a]
            try:
                numbers[key] = int(a.split("=", 1)[1])
            except ValueError:
                print(f"yolo-plugins slim: {key} must be a whole number, got {a!r}", file=sys.stderr)
                return 2
    parsed = file_and_output(args, key="model")
    if parsed is None:
        print("usage: yolo-plugins slim best.pt queries=N [eval_idx=K] [-o out.pt]", file=sys.stderr)
        return 2
    try:
        target, changed = slim(parsed[0], out=parsed[1], **numbers)
    except (ValueError, FileNotFoundError) as e:
        print(f"yolo-plugins {e}", file=sys.stderr)
        return 2
    print(f"{parsed[0]}: {'; '.join(changed)} -> {target}")
    return 0
