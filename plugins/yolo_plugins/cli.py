"""``yolo-plugins``: the project's console script.

yolo-plugins list                      blocks the plugin registered (name, class, source, rule, fuse)
yolo-plugins profile model=... ...     the profile tool (same as ``python -m yolo_plugins.profile``)
"""

from __future__ import annotations

import sys

USAGE = """usage: yolo-plugins <command> [key=value ...]

commands:
  list      the blocks the plugin registered
  profile   per-module params/GFLOPs table and the RT-DETR variant sweep (yolo-plugins profile help)"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``yolo-plugins <command>``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "profile":
        from .profile.__main__ import main as profile_main

        return profile_main(rest, prog="yolo-plugins profile")
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


if __name__ == "__main__":
    sys.exit(main())
