"""fp16 TorchScript files that differ from the build's `model_fp16.pt` in one export choice, for
the GPU lab (`GPU_RUN_STEPS=lab` in benchmarks/gpu_run.sh): the same weights, traced on this
GPU, each checked (and the build's `model_fp16.pt` first) against the build's fp32 `model.pt` on
the same GPU before it is timed.

    python -m benchmarks.lab_exports --out /tmp/lab --variants groups,efficient,flash --ids ids_mixed.npy

`groups`: length-sorted groups over padded rows (`_ScriptedTrim`, the export before packing);
`efficient` / `flash`: packed tokens (`_ScriptedPack`) with that varlen attention kernel, no CUDA
graphs; `graphs`: what the build exports (`_ScriptedGraphs`: packed "efficient" plus CUDA graphs
of it for batches up to 64 rows); `padded_graphs`: the graphs before that (`PaddedGraphs`: the
padded tower over (rows, length) buckets); `device_output`: `graphs`, but the embeddings stay on
the GPU (the files before `host_output`); `fused_norm` / `unfused`: `graphs` with each residual
add and the layer norm after it as one op (clip_kernels::add_layer_norm) / as two, whatever the
build's FP16_FUSED_NORM. Variants can be served side by side with the build's
file (benchmarks/serving_settings.py takes a model file per setting).

Each file is checked in batches of varied sizes (1 to 200 rows), so both the graphs' buckets and
the packed path are compared.
"""

from __future__ import annotations

import argparse
import copy
import sys
import threading
from pathlib import Path
from typing import List

import numpy as np
import torch

from clip_triton import verify
from clip_triton_build import cuda_graphs
from clip_triton_build.export import (
    FP16_FUSED_NORM,
    FP16_PACKED_ATTENTION,
    _bucket,
    _Float32Output,
    _ScriptedGraphs,
    example_input_ids,
    export_torchscript,
    pack,
)
from clip_triton_build.repository import BUILT_REPOSITORY, cuda_graphs_library
from clip_triton_build.spec import CONTEXT_LENGTH, ENCODER_MODEL, TORCHSCRIPT_FILE, TORCHSCRIPT_FP16_FILE
from clip_triton_build.text_tower import CLIPTextTower, PackedTextTower, in_vocabulary, pooling_positions
from clip_triton_build.weights import load_encoder

CHECK_BATCHES = (1, 3, 8, 17, 40, 64, 200)


class PaddedGraphs(_ScriptedGraphs):
    """The fp16 export's CUDA graphs before they ran the packed tower (main up to 9abcf87): the
    padded tower over (rows, length) buckets, GRAPH_ROWS x (16, 32, 77), every text padded to the
    length bucket of the batch's longest."""

    def __init__(self, inner, padded, vocab_size: int, eos_token_id: int):
        super().__init__(inner, vocab_size, eos_token_id)
        self.padded = padded  # the tower on [B, L] ids (any L): what these graphs capture
        self.graph_lengths: List[int] = [16, 32, CONTEXT_LENGTH]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids.size(0)
        if not input_ids.is_cuda or rows > self.graph_rows[-1]:
            return self._output(self._packed(input_ids))
        input_ids = in_vocabulary(input_ids, self.vocab_size, self.pad_id)
        length = int(pooling_positions(input_ids, self.eos_token_id).max().item()) + 1
        static = torch.ops.clip_cuda_graphs.stage(
            input_ids, _bucket(self.graph_rows, rows), _bucket(self.graph_lengths, length), 0
        )
        if not torch.ops.clip_cuda_graphs.captured(static):
            torch.ops.clip_cuda_graphs.enter(static)
            warmed = self.padded(static)
            torch.ops.clip_cuda_graphs.capture_begin(static, warmed)
            captured = self.padded(static)
            torch.ops.clip_cuda_graphs.capture_end(static, captured)
        return self._output(torch.ops.clip_cuda_graphs.replay(static)[:rows])


def export_padded_graphs(model: torch.nn.Module, path: Path, device: str) -> Path:
    """`PaddedGraphs` as export_torchscript(fp16=True, packed_attention="efficient", cuda_graphs=True)
    traces the build's file."""
    tower = CLIPTextTower(copy.deepcopy(model), memory_efficient_attention=True).to(device, torch.float16).eval()
    example = example_input_ids().to(device)
    with torch.no_grad():
        packed = PackedTextTower(tower, FP16_PACKED_ATTENTION).eval()
        inner = torch.jit.trace(packed, pack(example, tower.eos_token_id), check_trace=False)
        padded = torch.jit.trace(_Float32Output(tower), (example,), check_trace=False)
        torch.jit.script(PaddedGraphs(inner, padded, tower.vocab_size, tower.eos_token_id)).save(str(path))
    return path


def batched(module, ids: torch.Tensor) -> torch.Tensor:
    """`module` over `ids` in consecutive batches of CHECK_BATCHES' sizes, in turn."""
    pieces, start, k = [], 0, 0
    while start < len(ids):
        size = CHECK_BATCHES[k % len(CHECK_BATCHES)]
        pieces.append(module(ids[start : start + size]))
        start, k = start + size, k + 1
    return torch.cat(pieces)


def fused_norm_matches_aten(device: str) -> bool:
    """clip_kernels::add_layer_norm against `x + delta` and F.layer_norm, in fp16 on `device`, at
    the widths it has a kernel for and rows that fill no block evenly: the sum bit for bit, the
    norm within one fp16 rounding."""
    generator = torch.Generator().manual_seed(0)
    ok = True
    for width in (256, 512, 768, 1024):
        for rows in (1, 7, 16_411):
            x, delta = (torch.randn(rows, width, generator=generator) * 3 for _ in range(2))
            weight, bias = torch.randn(width, generator=generator), torch.randn(width, generator=generator)
            x, delta, weight, bias = (t.to(device, torch.float16) for t in (x, delta, weight, bias))
            total, normed = torch.ops.clip_kernels.add_layer_norm(x, delta, weight, bias, 1e-5)
            want = x + delta
            want_normed = torch.nn.functional.layer_norm(want, (width,), weight, bias, 1e-5)
            same_sum = torch.equal(total, want)
            error = (normed.float() - want_normed.float()).abs().max().item()
            bound = 2 * torch.finfo(torch.float16).eps * want_normed.float().abs().max().item()
            ok = ok and same_sum and error <= bound
            print(
                f"[lab export] add_layer_norm {rows} x {width}: sum equal {same_sum}, "
                f"norm max abs diff {error:.2e} (bound {bound:.2e})",
                flush=True,
            )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="groups,efficient,flash")
    parser.add_argument("--ids", type=Path, action="append", default=[], help=".npy ids to check each file on")
    parser.add_argument("--texts", default="", help="corpus kinds to check on too, tokenized by the shipped model.py")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda_graphs.load(cuda_graphs_library())  # the build's (GPU build: --fp16)
    model = load_encoder().model  # what the build loads: the seeded random init where no weights come
    reference = torch.jit.load(str(BUILT_REPOSITORY / ENCODER_MODEL / "1" / TORCHSCRIPT_FILE), map_location=args.device)
    checks = {path.name: np.load(path)[:1024] for path in args.ids}
    if args.texts:
        from benchmarks.tokenizer_speed import SHIPPED, load
        from clip_triton import corpus

        tokenizer = load(SHIPPED, "shipped_tokenizer")
        for kind in args.texts.split(","):
            checks[kind] = tokenizer.tokenize(corpus.texts(kind, 1024))
    files = {"build": BUILT_REPOSITORY / ENCODER_MODEL / "1" / TORCHSCRIPT_FP16_FILE}  # the build's own, checked too
    for variant in filter(None, args.variants.split(",")):
        files[variant] = args.out / f"model_fp16_{variant}.pt"
        if variant == "padded_graphs":
            export_padded_graphs(model, files[variant], args.device)
            continue
        graphs = variant in ("graphs", "device_output", "fused_norm", "unfused")
        export_torchscript(
            model,
            files[variant],
            device=args.device,
            fp16=True,
            packed_attention=FP16_PACKED_ATTENTION if graphs else {"groups": None}.get(variant, variant),
            cuda_graphs=graphs,
            host_output=variant != "device_output",
            fused_norm={"fused_norm": True, "unfused": False}.get(variant, FP16_FUSED_NORM and graphs),
        )
    ok = fused_norm_matches_aten(args.device)
    for variant, path in files.items():
        # each file on a thread of its own: CUDA graphs belong to their caller's thread
        # (csrc/cuda_graphs.cpp), and one thread's next file would replay the last file's graphs,
        # whose weights went with it
        checked_ok: list[bool] = []
        worker = threading.Thread(target=lambda: checked_ok.append(check_file(variant, path, checks, reference, args)))
        worker.start()
        worker.join()
        ok = ok and checked_ok == [True]
    return 0 if ok else 1


def check_file(variant: str, path: Path, checks: dict, reference, args) -> bool:
    """`path` against the fp32 model.pt on every set in `checks`, in CHECK_BATCHES' batches."""
    ok = True
    module = torch.jit.load(str(path), map_location=args.device)
    for name, checked in checks.items():
        ids = torch.from_numpy(checked).to(args.device)
        with torch.no_grad():
            got, want = batched(module, ids), reference(ids)
        cosine = verify.compare(got.cpu().numpy(), want.cpu().numpy()).min_cosine
        # where the embeddings come back: host memory, unless the variant keeps them on the device
        expected = ids.device.type if variant == "device_output" else "cpu"
        placed = want.device.type == "cpu" and got.device.type == expected
        ok = ok and cosine >= 0.999 and placed
        print(
            f"[lab export] {path.name} on {name}: min cosine vs fp32 model.pt {cosine:.6f}, "
            f"embeddings on {got.device} (model.pt's on {want.device})",
            flush=True,
        )
    return ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
