"""The end-to-end benchmark's PNG: throughput vs latency, the stage breakdown, and RSS over the long run.

Needs matplotlib (the `bench` extra); without it the report says so instead of failing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from streaming.bench.e2e_report import STAGE_ORDER, rate

STAGE_COLOURS = {"queue": "#bbbbbb", "fetch": "#4c72b0", "decode": "#55a868", "resize": "#8fd19e",
                 "infer": "#c44e52", "operator_other": "#8172b2", "outside": "#ccb974"}


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(report: dict[str, Any], path: Path) -> Path:
    """Write the three panels to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = report.get("runs", {}).get("main", {})
    curve = main.get("curve", [])
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2))

    # 1. throughput vs latency: achieved images/s at each offered rate, p50/p95/p99
    xs = [row["images_per_s"] for row in curve]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^-")):
        ax1.plot(xs, [row[key] for row in curve], style, label=key.split("_")[0])
    for row in curve:
        ax1.annotate(f"{row['fraction']:.0%}", (row["images_per_s"], row["p99_ms"]), textcoords="offset points",
                     xytext=(4, 6), fontsize=8)
    marks = [("pipeline peak", rate(main.get("peak")), "k"),
             ("ideal", report.get("alone", {}).get("ideal_images_per_s", {}).get(report["config"]["model_name"]), "g"),
             ("naive x1", rate(report.get("naive", {}).get("1")), "r")]
    for label, value, colour in marks:
        if value:
            ax1.axvline(value, color=colour, linestyle=":", linewidth=1)
            ax1.text(value, 0.98, f" {label} {value:.0f}/s", color=colour, rotation=90, va="top", fontsize=8,
                     transform=ax1.get_xaxis_transform())
    if curve:
        ax1.set_yscale("log")
    else:
        ax1.text(0.5, 0.5, "no rate curve in this run", ha="center", transform=ax1.transAxes)
    ax1.set_xlabel("images/s (achieved, at 25/50/75/100% of peak offered)")
    ax1.set_ylabel("latency, ms (send to read_committed receipt)")
    ax1.set_title("Throughput vs latency (at-least-once)")
    if curve:
        ax1.legend(loc="lower right")
    ax1.grid(True, which="both", alpha=0.3)

    # 2. where the time goes, per offered rate (+ exactly-once at 50%)
    cols = [(f"{row['fraction']:.0%}", row) for row in curve]
    eo = report.get("runs", {}).get("exactly_once", {}).get("at_50pct")
    if eo:
        cols.append(("EO 50%", eo))
    bottoms = [0.0] * len(cols)
    for stage in STAGE_ORDER:
        values = [row.get("stages_ms", {}).get(stage, 0.0) for _, row in cols]
        ax2.bar([c for c, _ in cols], values, bottom=bottoms, label=stage, color=STAGE_COLOURS[stage])
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax2.set_ylabel("mean ms per result")
    ax2.set_xlabel("offered rate (% of peak)")
    ax2.set_title("Stage breakdown (timings_ms; outside = Kafka + Flink bridge + sink)")
    if cols:
        ax2.legend(fontsize=8)

    # 3. RSS over the long run
    samples = main.get("memory", {}).get("rss_mib", [])
    if samples:
        t = [s["t_s"] / 60 for s in samples]
        for name in ("taskmanager_jvm", "python_workers", "triton"):
            ax3.plot(t, [s.get(name, 0) for s in samples], label=name)
        start = report["settings"]["memory_from_s"] / 60
        ax3.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax3.set_ylim(bottom=0)
        ax3.legend(fontsize=8)
    ax3.set_xlabel("minutes into the long run")
    ax3.set_ylabel("RSS, MiB")
    ax3.set_title("Memory (growth measured from the dotted line)")

    machine = report.get("machine", {})
    fig.suptitle(f"imgstream bench e2e ({report['mode']}): {machine.get('cpus', '?')} cores, load average "
                 f"{machine.get('load_average_before', ['?'])[0]} before / {machine.get('load_average_after', ['?'])[0]} "
                 f"after, {machine.get('started_at', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
