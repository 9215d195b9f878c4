"""The GPU run's per-model table: one check report per CLIP family shape (run.sh's `models`
step writes OUT/<family>/gpu_report.json), side by side, with each raw encoder against its
GEMM-bound limit: the matrix-multiply work of the texts it ran (their real tokens: the fp16 file
packs them) at the card's dense fp16 tensor-core peak.

    python -m benchmarks.gpu.models OUT [--families b32,l14,h14] [--json models.json] [--plot models.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tests.checkpoints import FAMILIES, Family

# dense fp16/bf16 tensor-core peak, FLOP/s, by the name nvidia-smi gives (NVIDIA's data sheets)
PEAK_FP16 = {"NVIDIA H200": 989.4e12, "NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H200 NVL": 835.5e12}
EOT_ID = 49407


def flops_per_text(family: Family, ids: np.ndarray) -> float:
    """Mean multiply-add work (2 FLOP each) of one text of `ids` through the packed tower: per real
    token and layer the QKV, output and MLP matrices (4 w^2 + 2 w mlp), attention over the tokens
    before it (QK and PV: 2 w per earlier token), and the projection of the pooled token."""
    tokens = (ids == EOT_ID).argmax(axis=1) + 1
    w, layers = family.width, family.layers
    dense = tokens * layers * (4 * w * w + 2 * w * family.mlp)
    attention = layers * 2 * w * tokens * (tokens + 1) / 2
    return float(np.mean(2 * (dense + attention) + 2 * w * family.projection_dim))


def perf_row(report: dict, concurrency: int, protocol: str = "grpc") -> dict:
    return next(
        r
        for r in report["load"]
        if r.get("tool") == "perf_analyzer"
        and r["concurrency"] == concurrency
        and r["texts_per_request"] == 1
        and r.get("protocol", "grpc") == protocol
    )


def bulk_row(report: dict, kind: str) -> dict:
    return next(
        r for r in report["load"] if r["texts_per_request"] == 256 and r.get("texts") == kind and "tool" not in r
    )


def raw_best(report: dict, kind: str) -> dict:
    return max(
        (r for r in report["raw_encoder"]["results"] if r.get("kind") == kind and "docs_per_s" in r),
        key=lambda r: r["docs_per_s"],
    )


def summarize(out: Path, name: str, peak: float | None) -> dict:
    report = json.loads((out / name / "gpu_report.json").read_text())
    family = FAMILIES[name]
    gpu = report["nvidia_smi"].split(",")[0].strip()
    peak = peak or PEAK_FP16.get(gpu)
    one, many = perf_row(report, 1), perf_row(report, 64)
    row = {
        "model": name,
        "shape": f"{family.hub_id} text tower: width {family.width}, {family.layers} layers, {family.heads} heads, "
        f"{family.hidden_act}, {family.projection_dim}-d",
        "gpu": gpu,
        "encoder_instances": len(report["gpu_instances"]),
        "fp16_min_cosine_vs_cpu_onnx": report.get("fp16_min_cosine_vs_cpu_onnx"),
        "fp16_graphs_min_cosine": min(
            report.get("fp16_graphs_batch24_min_cosine_vs_cpu_onnx", 1.0),
            report.get("fp16_graphs_batch5_min_cosine_vs_cpu_onnx", 1.0),
        ),
        "parity_ok": report.get("parity_ok"),
        "one_text_p50_ms": one["p50_ms"],
        "one_text_p99_ms": one["p99_ms"],
        "singles_c64_docs_per_s": many["docs_per_s"],
        "singles_c64_p99_ms": many["p99_ms"],
    }
    for kind in ("short", "mixed"):
        bulk, raw = bulk_row(report, kind), raw_best(report, kind)
        row[f"bulk_{kind}_docs_per_s"] = bulk["docs_per_s"]
        row[f"bulk_{kind}_of_raw_encoder"] = bulk.get("of_raw_encoder")
        row[f"raw_{kind}_docs_per_s"] = raw["docs_per_s"]
        row[f"raw_{kind}_batch_threads"] = f"{raw['batch']}x{raw['threads']}"
        ids_path = out / name / f"ids_{kind}.npy"
        if peak and ids_path.is_file():
            flops = flops_per_text(family, np.load(ids_path))
            row[f"gemm_bound_{kind}_docs_per_s"] = peak / flops
            row[f"raw_{kind}_of_gemm_bound"] = raw["docs_per_s"] * flops / peak
    return row


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(rows))
    bars = (("served 8x256 short", "bulk_short_docs_per_s"), ("raw encoder, short", "raw_short_docs_per_s"))
    for i, (label, key) in enumerate(bars):
        ax.bar(x + (i - 0.5) * 0.35, [r[key] for r in rows], 0.35, label=label)
    ax.plot(
        x, [r.get("gemm_bound_short_docs_per_s", np.nan) for r in rows], "k_", markersize=30, label="GEMM-bound limit"
    )
    ax.set_yscale("log")
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.set_ylabel("texts/s")
    ax.set_title(f"CLIP text towers, fp16, {rows[0]['gpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="run.sh's output folder")
    parser.add_argument("--families", default="b32,l14,h14")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense fp16 peak (default: by name)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    rows = [
        summarize(args.out, name, peak)
        for name in args.families.split(",")
        if (args.out / name / "gpu_report.json").is_file()
    ]
    for r in rows:
        print(
            f"{r['model']}: {r['encoder_instances']} instances, "
            f"fp16 min cosine {r['fp16_min_cosine_vs_cpu_onnx']:.6f}, "
            f"one text p50 {r['one_text_p50_ms']:.2f} / p99 {r['one_text_p99_ms']:.2f} ms, 64 singles "
            f"{r['singles_c64_docs_per_s']:,.0f}/s, 8x256 short {r['bulk_short_docs_per_s']:,.0f}/s "
            f"mixed {r['bulk_mixed_docs_per_s']:,.0f}/s, raw short {r['raw_short_docs_per_s']:,.0f}/s "
            f"({r.get('raw_short_of_gemm_bound', float('nan')):.0%} of GEMM-bound), raw mixed "
            f"{r['raw_mixed_docs_per_s']:,.0f}/s ({r.get('raw_mixed_of_gemm_bound', float('nan')):.0%})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.plot and rows:
        plot(rows, args.plot)
    return 0 if rows and all(r["parity_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
