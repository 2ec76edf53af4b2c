"""The preprocessing benchmark's report: a Markdown table, the targets, and their check."""
from __future__ import annotations

from typing import Any

from streaming.bench.preprocess import ENGINE, METHODS, TARGET_MAD, TARGET_SCALING, TARGET_VS_C


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per method, one column per photo group (images/s on one core, MP/s),
    then the engine's ratios, the correctness column, and the scaling runs."""
    groups = list(report["groups"])
    photos = {g: [p for p in report["photos"] if p["group"] == g] for g in groups}
    head = [f"{g} ({_sizes(photos[g])})" for g in groups]
    lines = ["| method | " + " | ".join(head) + " | MAD vs full+area (max) |",
             "|---|" + "---|" * len(groups) + "---|"]
    for key, label in METHODS:
        cells = []
        mads = []
        for g in groups:
            row = report["groups"][g][key]
            if "unavailable" in row:
                cells.append("n/a")
                continue
            cell = f"{row['images_per_core_s']:.0f} img/s · {row['mp_per_core_s']:.0f} MP/s"
            if key == "engine_fetch":
                cell += f" ({row['images_per_wall_s']:.0f}/s wall)"
            cells.append(cell)
            if "mad_max" in row:
                mads.append(row["mad_max"])
        mad = f"{max(mads):.2f}" if mads else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mad} |")
    for name, (num, den) in (("engine ÷ C limit", (ENGINE, "c_limit")),
                             ("engine ÷ naive Pillow", (ENGINE, "naive")),
                             ("PyTurboJPEG path ÷ Pillow-draft path", ("engine_turbojpeg", "engine_pillow"))):
        lines.append(f"| **{name}** | " + " | ".join(_ratio(report, g, num, den) for g in groups) + " | |")
    scaling = report.get("scaling", {})
    if scaling:
        counts = sorted({int(n) for g in scaling.values() for n in g})
        for n in counts[1:]:
            cells = []
            for g in groups:
                run = scaling.get(g, {}).get(str(n))
                cells.append(f"{run['speedup']:.2f}x (CPU share {run['cpu_share']:.2f}, "
                             f"per-core {run['per_core_efficiency']:.2f})" if run else "n/a")
            lines.append(f"| **engine, {n} worker processes ÷ 1** | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


LEGEND = """\
img/s and MP/s are per core: images per CPU-second of the measuring process (median of the
rounds); "wall" is images per wall-clock second, fetch latency included. MAD: mean absolute
difference per pixel (0-255) against full decode + area resize, worst photo of the row.
Workers: wall-clock speedup over one worker process; CPU share below ~0.95 means other programs
had the cores; per-core = images per CPU-second with N workers / with 1 (1.00: the workers do
not slow each other down)."""


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it was met."""
    out = []
    for g, rows in report["groups"].items():
        engine, c = rows[ENGINE], rows["c_limit"]
        value = (engine["images_per_core_s"] / c["images_per_core_s"]
                 if "unavailable" not in c and c["images_per_core_s"] else None)
        out.append(_target(f"{g}: engine >= {TARGET_VS_C} x C limit", value, TARGET_VS_C, ">="))
        out.append(_target(f"{g}: engine MAD < {TARGET_MAD}", engine.get("mad_max"), TARGET_MAD, "<"))
    for g, runs in report.get("scaling", {}).items():
        for n, run in runs.items():
            if n == "2":
                out.append(_target(f"{g}: 2 workers >= {TARGET_SCALING} x 1", run["speedup"],
                                   TARGET_SCALING, ">="))
    return out


def _target(name: str, value: float | None, threshold: float, op: str) -> dict[str, Any]:
    met = value is not None and (value >= threshold if op == ">=" else value < threshold)
    return {"target": name, "value": None if value is None else round(value, 3), "met": met}


def _ratio(report: dict[str, Any], group: str, num: str, den: str) -> str:
    a, b = report["groups"][group][num], report["groups"][group][den]
    if "unavailable" in a or "unavailable" in b or not b["images_per_core_s"]:
        return "n/a"
    return f"{a['images_per_core_s'] / b['images_per_core_s']:.2f}x"


def _sizes(photos: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({f"{p['width']}x{p['height']}" for p in photos}))
