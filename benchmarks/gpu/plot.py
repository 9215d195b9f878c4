"""Plot a report of benchmarks.gpu.check: each load point next to the raw encoder (same run, same
GPU, same texts), the settings sweep, and where one text's time goes at concurrency 1.

    python -m benchmarks.gpu.plot benchmarks/results/gpu_h100.json gpu_h100.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(row: dict) -> str:
    return f"{row['concurrency']}x{row['texts_per_request']}\n{row['texts']}"


def perf_analyzer(ax, report: dict) -> None:
    """perf_analyzer's points against the ensemble: docs/s, p50 and p99."""
    rows = [
        r
        for r in report["load"] + report.get("limits_c64", [])
        if r.get("tool") == "perf_analyzer" and r.get("model", "clip_text") == "clip_text"
    ]
    xs = range(len(rows))
    ax.bar(xs, [r["docs_per_s"] for r in rows], 0.6, color="tab:green")
    for x, r in zip(xs, rows):
        text = f"{r['docs_per_s']:,.0f}\np50 {r['p50_ms']:.2f} ms\np99 {r['p99_ms']:.2f} ms"
        ax.annotate(text, (x, r["docs_per_s"]), ha="center", va="bottom", fontsize=7)
    ticks = [f"{r['concurrency']}x{r['texts_per_request']}\n{r['kind']}, {r['protocol']}" for r in rows]
    ax.set_xticks(list(xs), ticks, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=max([r["docs_per_s"] for r in rows], default=1) * 10)  # room for the labels
    ax.set_ylabel("docs/s (log)")
    ax.set_title("perf_analyzer, the same server")


def settings_panel(ax, sweep: list[dict]) -> None:
    """The swept settings' load points side by side, a bar per setting."""
    settings = sorted({r["variant"] for r in sweep})
    points = [(8, 256, "short"), (8, 256, "mixed"), (64, 1, "mixed")]
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        values = [
            next(
                (
                    r["docs_per_s"]
                    for r in sweep
                    if r["variant"] == setting and (r["concurrency"], r["texts_per_request"], r["texts"]) == p
                ),
                0,
            )
            for p in points
        ]
        ax.bar(
            [i + (k - (len(settings) - 1) / 2) * width for i in range(len(points))],
            values,
            width,
            label=setting.replace("fp16 ", ""),
        )
    ax.set_xticks(range(len(points)), [f"{c}x{t}\n{kind}" for c, t, kind in points])
    ax.set_yscale("log")
    ax.set_title("settings, same server")
    ax.legend(fontsize=7)


def plot(report: dict, out: str) -> None:
    rows = [r for r in report["load"] if r.get("tool") != "perf_analyzer"]
    fig, (ax, ax_sweep, ax_trace) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [3, 3, 2]})
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["docs_per_s"] for r in rows], 0.4, label="server (clip_text ensemble)")
    raw = [r.get("raw_encoder_docs_per_s", 0) for r in rows]
    ax.bar([x + 0.2 for x in xs], raw, 0.4, label="raw encoder in-process, same texts (1 at a time / batch 256)")
    for x, r in zip(xs, rows):
        ax.annotate(
            f"{r['docs_per_s']:,.0f}\np50 {r['p50_ms']:.1f} ms",
            (x - 0.2, r["docs_per_s"]),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(list(xs), [label(r) for r in rows])
    ax.set_yscale("log")
    ax.set_ylim(top=max([r["docs_per_s"] for r in rows] + raw, default=1) * 10)  # room for the labels
    ax.set_ylabel("docs/s (log)")
    ax.set_title("fp16, the repository's GPU default")
    ax.legend(fontsize=7, loc="upper left")

    sweep = [r for r in report.get("sweep", []) if "texts" in r]  # the load points (not perf_analyzer's)
    if sweep:
        settings_panel(ax_sweep, sweep)
    else:  # nothing swept: the panel shows perf_analyzer's points (the C++ client: the headline)
        perf_analyzer(ax_sweep, report)

    parts = {k: v for k, v in report.get("one_text_breakdown", {}).items() if k != "ensemble_total"}
    ax_trace.barh(list(parts), [v["p50_us"] / 1e3 for v in parts.values()], label="p50")
    ax_trace.set_xlabel("ms (p50), one text at concurrency 1")
    ax_trace.set_title("Triton trace breakdown")
    ax_trace.tick_params(axis="y", labelsize=7)
    fig.suptitle(
        f"{report['nvidia_smi'].split(',')[0]}: Triton C++ libtorch backend, "
        f"{len(report.get('gpu_instances', []))} encoder instances"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(report_path: str, out: str) -> int:
    with open(report_path) as f:
        plot(json.load(f), out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
