"""Plot a GPU report of benchmarks.gpu_check:  python -m benchmarks.plot_gpu docs/gpu_report_h200_run2.json docs/benchmarks_gpu.png"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(report_path: str, out: str) -> int:
    report = json.load(open(report_path))
    rows = [r for r in report["load"] if r.get("model", "clip_text") == "clip_text" and r.get("tool") != "perf_analyzer"]
    labels = [f"{r['concurrency']}x{r['texts_per_request']}\n{r['texts']}" for r in rows if r["variant"] == "fp32"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.4
    for k, variant in enumerate(("fp32", "fp16")):
        values = [r["docs_per_s"] for r in rows if r["variant"] == variant]
        bars = ax.bar([i + (k - 0.5) * width for i in range(len(values))], values, width, label=variant)
        for bar, r in zip(bars, [r for r in rows if r["variant"] == variant]):
            ax.annotate(f"{r['docs_per_s']:.0f}\np50 {r['p50_ms']:.0f}ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("docs/s (log)")
    ax.set_xlabel("concurrency x texts per request, texts")
    ax.set_title(f"clip_text ensemble on {report['nvidia_smi'].split(',')[0]}, "
                 f"{report['encoder_instances_per_gpu']} encoder instances (TorchScript stand-in)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
