"""Outputs of the profile tool: Markdown, CSV, JSON and PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from . import table
from .sweep import Result
from .timing import Timing

SWEEP_COLUMNS = ("variant", "params", "gflops", "gflops_extra", "latency_ms", "d_params_pct", "d_gflops_pct")


def records(results: list[Result]) -> list[dict]:
    """One flat dict per variant, changes relative to the first (the baseline)."""
    base = results[0]
    return [
        r.record(base if i else None) | ({} if i else {"d_params_pct": 0.0, "d_gflops_pct": 0.0, "d_latency_pct": 0.0})
        for i, r in enumerate(results)
    ]


def _pct(v) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def sweep_markdown(results: list[Result]) -> str:
    """The sweep as a Markdown table (GFLOPs here include the extra work; the thop part is in brackets)."""
    recs = records(results)
    has_map = any("map50_95" in r for r in recs)
    head = (
        "| variant | #params | GFLOPs (thop + extra) | latency ms (median) | latency ms (min) | Δ params | Δ GFLOPs "
        "| Δ latency (median) | retrain |"
    )
    sep = "|:--|--:|--:|--:|--:|--:|--:|--:|:-:|"
    if has_map:
        head, sep = head + " mAP50-95 | mAP50 |", sep + "--:|--:|"
    lines = [head, sep]
    for r in recs:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        lat_min = "-" if r["latency_min_ms"] is None else f"{r['latency_min_ms']:.1f}"
        line = (
            f"| {r['variant']} | {table.fmt_params(r['params'])} | {r['gflops_total']:.2f} ({r['gflops']:.2f} + "
            f"{r['gflops_extra']:.3f}) | {lat} | {lat_min} | {_pct(r.get('d_params_pct'))} | "
            f"{_pct(r.get('d_gflops_pct'))} | {_pct(r.get('d_latency_pct'))} | "
            f"{'yes' if r['needs_retraining'] else 'no'} |"
        )
        if has_map:
            m, m50 = r.get("map50_95"), r.get("map50")
            line += f" {'-' if m is None else f'{m:.4f}'} | {'-' if m50 is None else f'{m50:.4f}'} |"
        lines.append(line)
    return "\n".join(lines)


def timing_markdown(t: Timing) -> str:
    """One line under the table: what the CPU ms column sums to, the plain end-to-end latency and the hook overhead."""
    threads = f"{t.threads} thread{'s' if t.threads != 1 else ''}"
    runs = f"{t.runs} run{'s' if t.runs != 1 else ''}"
    return (
        f"CPU time (batch 1, {threads}, median of {runs} after {t.warmup} warm-up, fused model): components sum to "
        f"{t.sum_ms:.2f} ms with hooks; the whole forward took {t.hooked_median_ms:.2f} ms with hooks and "
        f"{t.end_to_end_median_ms:.2f} ms without (end-to-end, min {min(t.end_to_end_ms):.2f} ms): "
        f"hooks add {t.overhead_pct:+.1f}%"
    )


def to_json(results: list[Result], depth: int) -> dict:
    """``{"variants": [...], "modules": [...], "timing": {...} | None}``: every variant, the baseline's module rows
    (with ``cpu_ms``/``cpu_share`` when timed) and the baseline's timing summary."""
    base = results[0]
    return {
        "imgsz": list(base.counts.imgsz) if base.counts else None,
        "variants": records(results),
        "modules": table.to_records(base.rows, depth),
        "timing": base.timing.record() if base.timing else None,
    }


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write dict rows to CSV (columns: the union of keys, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def plot_components(results: list[Result], path: Path, title: str = "") -> Path:
    """Stacked bars: GFLOPs of backbone / encoder / decoder (thop + extra) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.variant for r in results]
    sections = list(dict.fromkeys(k for r in results for k in r.components))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.2), dpi=100)
    bottom = [0.0] * len(names)
    colors = {"backbone": "#4C72B0", "encoder": "#DD8452", "decoder": "#55A868", "neck": "#DD8452", "head": "#55A868"}
    for s in sections:
        vals = [r.components.get(s, 0.0) for r in results]
        ax.bar(names, vals, bottom=bottom, label=s, color=colors.get(s))
        bottom = [b + v for b, v in zip(bottom, vals)]
    for x, b in enumerate(bottom):
        ax.text(x, b, f"{b:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("GFLOPs")
    ax.set_title(title or "GFLOPs by component")
    ax.set_ylim(0, max(bottom) * 1.12)
    ax.legend(loc="upper right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_latency(results: list[Result], path: Path, title: str = "") -> Path | None:
    """Scatter: CPU latency against GFLOPs, one labelled point per variant."""
    pts = [r for r in results if r.latency_ms is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    xs, ys = [r.gflops_total for r in pts], [r.latency_ms for r in pts]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets = ((4, 3), (4, -10), (-4, 3), (-4, -10), (4, 10), (-4, 10), (4, -17), (-4, -17))
    used: list[tuple[float, float]] = []  # label anchors, in axis fractions, to keep labels from overlapping
    for r in pts:
        kind = "o" if not r.needs_retraining else "s"
        color = "#C44E52" if r.variant == "baseline" else "#55A868" if not r.needs_retraining else "#4C72B0"
        ax.scatter(r.gflops_total, r.latency_ms, marker=kind, color=color, s=36, zorder=3)
        fx, fy = (r.gflops_total - min(xs)) / sx, (r.latency_ms - min(ys)) / sy
        for dx, dy in offsets:
            ax_, ay_ = fx + dx / 400, fy + dy / 250
            if all(abs(ax_ - ux) > 0.12 or abs(ay_ - uy) > 0.05 for ux, uy in used):
                break
        used.append((ax_, ay_))
        ax.annotate(
            r.variant,
            (r.gflops_total, r.latency_ms),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=7,
            ha="left" if dx > 0 else "right",
        )
    ax.scatter([], [], marker="o", color="#C44E52", label="baseline")
    ax.scatter([], [], marker="o", color="#55A868", label="no retraining")
    ax.scatter([], [], marker="s", color="#4C72B0", label="new model (retrain)")
    ax.set_xlabel("GFLOPs (thop + extra)")
    ax.set_ylabel("CPU latency, ms (median, batch 1)")
    ax.set_title(title or "Latency vs GFLOPs")
    ax.grid(alpha=0.3)
    ax.margins(x=0.12, y=0.12)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save(
    results: list[Result], save_dir: Path, depth: int, title: str, command: str = "", plots: bool = True
) -> list[Path]:
    """Write profile.md, modules.csv, sweep.csv (when sweeping), profile.json and the PNG plots into ``save_dir``."""
    save_dir.mkdir(parents=True, exist_ok=True)
    base = results[0]
    md = [f"# {title}", ""]
    if command:
        md += ["```", command, "```", ""]
    md += [table.to_markdown(base.rows, depth), ""]
    if base.timing is not None:
        md += [timing_markdown(base.timing), ""]
    files = [save_dir / "profile.md", write_csv(save_dir / "modules.csv", table.to_records(base.rows, depth))]
    if len(results) > 1 or (base.latency_ms is not None and base.timing is None):
        md += ["## Sweep", "", sweep_markdown(results), ""]
        files.append(write_csv(save_dir / "sweep.csv", records(results)))
    (save_dir / "profile.md").write_text("\n".join(md))
    (save_dir / "profile.json").write_text(json.dumps(to_json(results, depth), indent=1))
    files.append(save_dir / "profile.json")
    if plots and len(results) > 1:
        files.append(plot_components(results, save_dir / "gflops_by_component.png", f"{title}: GFLOPs by component"))
        lat = plot_latency(results, save_dir / "latency_vs_gflops.png", f"{title}: latency vs GFLOPs")
        if lat:
            files.append(lat)
    return files
