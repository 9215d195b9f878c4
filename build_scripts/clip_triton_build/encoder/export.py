"""The CLIP text tower as the repository's encoder files: model.onnx and the TorchScript files.

`TrimmedTextEncoder` is what gets exported to ONNX: input_ids [B, 77] -> text_embeds [B, 512],
equal to HF `get_text_features(input_ids)` for ids in the vocabulary (others read as the pad id).
It runs `text_tower.CLIPTextTower` after cutting the batch to its largest pooling position + 1.
CLIP's text transformer is causal and pools the hidden state at the EOT position, so positions
after the last EOT of the batch never reach the output; cutting them is exact and saves most of
the compute for caption-length texts (typically 10-20 of 77 positions). The TorchScript files
go further: the fp16 GPU file packs a batch's real tokens into one sequence (`_ScriptedPack`,
no padding at all) and replays small batches as CUDA graphs of that (`_ScriptedGraphs`); the others run
big batches in length-sorted groups (`_ScriptedTrim`). Every TorchScript file returns its
embeddings in host memory (see `_ScriptedEncoder`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Tuple

import torch

from clip_triton_contract.names import CONTEXT_LENGTH, EMBEDS_TENSOR, IDS_TENSOR

from ..spec import PAD_ID, VIT_B32_TEXT_CONFIG
from .text_tower import CLIPTextTower, PackedTextTower, in_vocabulary, pooling_positions

# TorchScript export: length groups of at most this many rows, and what one more forward pass
# costs in padded positions (rows x length) when deciding where to cut (see _ScriptedTrim)
GPU_GROUP_ROWS = 512
CPU_GROUP_ROWS = 128
GPU_PASS_COST = 2048
CPU_PASS_COST = 256
# The fp16 GPU export's attention over packed texts (text_tower.PACKED_ATTENTION)
FP16_PACKED_ATTENTION = "efficient"
# The fp16 GPU export replays batches of up to GRAPH_ROWS[-1] rows as CUDA graphs of the packed
# tower (_ScriptedGraphs), one per (rows, tokens) bucket and Triton instance: a batch runs in the
# smallest that holds it. Token buckets ~1.5x apart up to 64 rows of 77 tokens: what padding to a
# bucket can cost in GPU time, against how many graphs (captures, and memory) a workload touches.
GRAPH_ROWS = (1, 2, 4, 8, 16, 32, 64)
GRAPH_TOKENS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, GRAPH_ROWS[-1] * CONTEXT_LENGTH)


class TrimmedTextEncoder(torch.nn.Module):
    """What model.onnx computes: ids made valid (`in_vocabulary`), the batch cut to its longest
    text, then the tower."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.tower = CLIPTextTower(model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids = in_vocabulary(input_ids, self.tower.vocab_size)
        length = pooling_positions(input_ids, self.tower.eos_token_id).max() + 1
        # a 0-d tensor, not int(length): the trace keeps it data-dependent instead of a constant
        keep = torch.arange(length, device=input_ids.device)  # type: ignore[call-overload]
        return self.tower(input_ids.index_select(1, keep))


def example_input_ids(batch: int = 2) -> torch.Tensor:
    ids = torch.zeros(batch, CONTEXT_LENGTH, dtype=torch.long)
    ids[:, 0] = VIT_B32_TEXT_CONFIG["bos_token_id"]
    ids[:, 1:5] = torch.tensor([320, 1125, 539, 320])
    ids[:, 5] = VIT_B32_TEXT_CONFIG["eos_token_id"]
    return ids


def export_batched_onnx(
    module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int
) -> Path:
    """`module` (one tensor in, one out) as an ONNX file whose first axis, the batch, is dynamic:
    how each tower's model.onnx is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def export_onnx(model: torch.nn.Module, path: Path, opset: int = 17) -> Path:
    return export_batched_onnx(TrimmedTextEncoder(model), example_input_ids(), path, IDS_TENSOR, EMBEDS_TENSOR, opset)


def export_torchscript(model: torch.nn.Module, path: Path, device: str = "cpu") -> Path:
    """The fp32 TorchScript file for Triton's libtorch (`pytorch`) backend: valid ids, the trim and
    length groups (`_ScriptedTrim`) scripted around the tower, traced once; it runs at any batch
    and length. The graph names no device (see text_tower), so a file traced on the CPU serves any
    GPU the backend loads it to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tower = CLIPTextTower(copy.deepcopy(model)).to(device, torch.float32).eval()
    with torch.no_grad():
        traced = torch.jit.trace(_Float32Output(tower), (example_input_ids().to(device),), check_trace=False)
        torch.jit.script(_ScriptedTrim(traced, tower.vocab_size, tower.eos_token_id)).save(str(path))
    return path


def export_packed(
    model: torch.nn.Module,
    path: Path,
    device: str = "cuda",
    half: bool = True,
    attention: str = FP16_PACKED_ATTENTION,
) -> Path:
    """The fp16 GPU file (`model_fp16.pt`): the packed tower (`PackedTextTower`, no padding, each
    residual add and its norm as one op), with CUDA-graph replay of small batches
    (`_ScriptedGraphs`). It takes int64 ids and returns fp32 embeddings. Tracing and loading it
    need the encoder's ops registered (`cuda_ops.load`). `half=False` and `attention="masked"`
    give the same structure in fp32 on any device (the CPU tests' reference math)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tower = CLIPTextTower(copy.deepcopy(model)).to(device, torch.float16 if half else torch.float32).eval()
    example = example_input_ids().to(device)
    with torch.no_grad():
        traced = torch.jit.trace(
            PackedTextTower(tower, attention).eval(), pack(example, tower.eos_token_id), check_trace=False
        )
        if "clip_kernels::add_layer_norm" not in str(traced.inlined_graph):
            raise RuntimeError("the trace lost the fused add and norm: the op ran as its parts")
        torch.jit.script(_ScriptedGraphs(traced, tower.vocab_size, tower.eos_token_id)).save(str(path))
    return path


def pack(input_ids: torch.Tensor, eos_token_id: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids [B, L] -> PackedTextTower's inputs: each row's tokens up to its pooling position
    (what reaches its output: CLIP is causal and pools there), one row after another, their
    positions, cu_seqlens [B + 1] (int32) and each row's last token. One wait for the device:
    how many tokens there are (`nonzero`)."""
    lengths = pooling_positions(input_ids, eos_token_id) + 1
    width = input_ids.size(1)
    keep = torch.arange(width, device=input_ids.device) < lengths.unsqueeze(1)
    flat = keep.flatten().nonzero().squeeze(1)  # row-major: row 0's tokens, then row 1's, ...
    ends = lengths.cumsum(0)
    cu_seqlens = torch.cat([ends.new_zeros(1), ends]).int()
    return input_ids.flatten().index_select(0, flat), flat % width, cu_seqlens, ends - 1


class _ScriptedEncoder(torch.nn.Module):
    """What the scripted wrappers share: the traced tower, what reading ids needs, and where the
    embeddings go (`_output`).

    A GPU batch's embeddings come back in host memory, in one device-to-host copy. Left on the
    device, every response would pay for its own: the libtorch backend copies each request's rows
    into its own device buffer, and the ensemble then copies each of those to the host frontend's
    buffer with a stream synchronisation per response (EnsembleContext's ResponseComplete), all on
    the instance's thread between two executions. On the CPU the embeddings are already in host
    memory and nothing is copied."""

    def __init__(self, inner, vocab_size: int, eos_token_id: int):
        super().__init__()
        self.inner = inner
        self.vocab_size = vocab_size
        self.pad_id = PAD_ID
        self.eos_token_id = eos_token_id

    def _output(self, embeds: torch.Tensor) -> torch.Tensor:
        return embeds.cpu()


class _ScriptedPack(_ScriptedEncoder):
    """Valid ids, then the packed tower over the batch's real tokens (`pack`): one pass for any
    batch, no padding, no length groups to plan."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._output(self._packed(input_ids))

    def _packed(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids = in_vocabulary(input_ids, self.vocab_size, self.pad_id)
        tokens, positions, cu_seqlens, last = pack(input_ids, self.eos_token_id)
        return self.inner(tokens, positions, cu_seqlens, last)


class _ScriptedGraphs(_ScriptedPack):
    """`_ScriptedPack`, but a batch of up to GRAPH_ROWS[-1] rows on a GPU replays a CUDA graph of the
    packed tower instead: one launch instead of the ~150 kernel launches (and ~180 interpreted
    ops) that make a small batch's forward cost ~3 ms of host time for 0.4 ms of kernels.

    A graph has fixed shapes, so the batch goes into the smallest (rows, tokens) bucket that holds
    it (GRAPH_ROWS x GRAPH_TOKENS): zero rows fill the rows (each pools at its first position: one
    token), and filler tokens that lie in no text fill the tokens (`_tower`). Texts run at their
    real lengths, so a batch of captions with one long text no longer pays 77 positions a row. The
    host learns the token count first (one wait for the device, as `pack`'s). Each bucket is
    captured the first time a batch of its size reaches an instance (an eager run, then the
    capture: milliseconds, once) and replayed after. The clip_cuda_graphs ops
    (native/cuda_ops/cuda_graphs.cpp) keep the buffers and graphs, one set per Triton instance (its thread
    and stream), and run these small batches on a high-priority stream (`urgent`). Bigger batches,
    and any on the CPU, run packed without a graph (a packed batch's shapes are its token count),
    on the instance's own stream."""

    def __init__(self, inner, vocab_size: int, eos_token_id: int):
        super().__init__(inner, vocab_size, eos_token_id)
        self.graph_rows: List[int] = list(GRAPH_ROWS)
        self.graph_tokens: List[int] = list(GRAPH_TOKENS)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids.size(0)
        if not input_ids.is_cuda or rows > self.graph_rows[-1]:
            return self._output(self._packed(input_ids))
        torch.ops.clip_cuda_graphs.urgent(input_ids)  # a query's batch: ahead of large ones on the GPU
        input_ids = in_vocabulary(input_ids, self.vocab_size, self.pad_id)
        bucket_rows = _bucket(self.graph_rows, rows)
        bucket_tokens = self._bucket_tokens(input_ids, bucket_rows)
        static = torch.ops.clip_cuda_graphs.stage(input_ids, bucket_rows, input_ids.size(1), bucket_tokens)
        if not torch.ops.clip_cuda_graphs.captured(static):
            torch.ops.clip_cuda_graphs.enter(static)  # the capture stream becomes current
            warmed = self._tower(static, bucket_tokens)  # eager, once: first-run set-up stays out of the graph
            torch.ops.clip_cuda_graphs.capture_begin(static, warmed)
            captured = self._tower(static, bucket_tokens)
            torch.ops.clip_cuda_graphs.capture_end(static, captured)
        return self._output(torch.ops.clip_cuda_graphs.replay(static)[:rows])

    def _bucket_tokens(self, input_ids: torch.Tensor, bucket_rows: int) -> int:
        """The token bucket of a batch filled with zero rows up to `bucket_rows`: each row's tokens
        up to its EOT (position + 1), and one for each zero row."""
        tokens = int(pooling_positions(input_ids, self.eos_token_id).sum().item()) + bucket_rows
        return _bucket(self.graph_tokens, tokens)

    def _tower(self, input_ids: torch.Tensor, tokens: int) -> torch.Tensor:
        """What a graph runs: `pack`, but to exactly `tokens` tokens (at least the batch's own) and
        without waiting for the device. Token t belongs to the text whose extent holds it
        (`searchsorted` over the texts' ends); those past the last text are filler, outside every
        extent in cu_seqlens: attention never reads them, every other op works token by token, and
        no text pools at them."""
        lengths = pooling_positions(input_ids, self.eos_token_id) + 1
        ends = lengths.cumsum(0)
        width = input_ids.size(1)
        index = torch.arange(tokens, device=input_ids.device)
        row = torch.searchsorted(ends, index, right=True).clamp(max=input_ids.size(0) - 1)
        position = (index - (ends - lengths).index_select(0, row)).clamp(0, width - 1)
        cu_seqlens = torch.cat([ends.new_zeros(1), ends]).int()
        return self.inner(input_ids.flatten().index_select(0, row * width + position), position, cu_seqlens, ends - 1)


def _bucket(buckets: List[int], size: int) -> int:
    """The smallest of the ascending `buckets` that holds `size` (the last if none does)."""
    for bucket in buckets:
        if bucket >= size:
            return bucket
    return buckets[-1]


class _Float32Output(torch.nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids):
        return self.tower(input_ids).float()


class _ScriptedTrim(_ScriptedEncoder):
    """Valid ids, trim, and for large batches length groups: rows are ordered by length and cut
    into groups, each run to its own longest text, so a few long texts in a big batch no longer
    make every row pay for 77 positions. Each row's result is the same however rows are grouped
    (CLIP is causal and pools at EOT: positions after a row's EOT never reach its output).

    Where to cut trades padding for passes: `_plan` picks the cuts that minimise padded positions
    (rows x group length) plus `*_pass_cost` positions per forward pass, exactly, by dynamic
    programming over the batch's distinct lengths (at most 77). A group holds at most
    `*_group_rows` rows. Both depend on the device: on a GPU a forward pass costs thousands of
    positions' worth of kernel launches whatever its size; on a CPU its cost follows rows x length.
    A batch too small for any cut to pay (rows x 77 <= pass cost) runs in one pass, unsorted.
    Every group's length comes from one device-to-host copy before the first group starts, so the
    GPU runs the groups back to back instead of waiting for the host between them."""

    def __init__(self, inner, vocab_size: int, eos_token_id: int):
        super().__init__(inner, vocab_size, eos_token_id)
        self.gpu_group_rows = GPU_GROUP_ROWS
        self.cpu_group_rows = CPU_GROUP_ROWS
        self.gpu_pass_cost = GPU_PASS_COST
        self.cpu_pass_cost = CPU_PASS_COST

    def _plan(self, lengths: List[int], rows_before: List[int], max_rows: int, pass_cost: int) -> List[int]:
        """Ends (indices into the ascending distinct `lengths`; `rows_before[i]`: rows shorter than
        `lengths[i]`) of the groups that minimise sum(passes x pass_cost + rows x length):
        O(distinct lengths ^ 2)."""
        best: List[int] = [0]  # best[j]: the cheapest plan for the first j distinct lengths
        cut: List[int] = [0]
        for j in range(1, len(lengths) + 1):
            best_j, cut_j = -1, 0
            for i in range(j):  # the last group: distinct lengths i..j-1, run at lengths[j - 1]
                rows = rows_before[j] - rows_before[i]
                cost = best[i] + (rows + max_rows - 1) // max_rows * pass_cost + rows * lengths[j - 1]
                if best_j < 0 or cost < best_j:
                    best_j, cut_j = cost, i
            best.append(best_j)
            cut.append(cut_j)
        ends: List[int] = []
        j = len(lengths)
        while j > 0:
            ends.append(j)
            j = cut[j]
        ends.reverse()
        return ends

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids = in_vocabulary(input_ids, self.vocab_size, self.pad_id)
        positions = pooling_positions(input_ids, self.eos_token_id)
        rows = input_ids.size(0)
        max_rows = self.gpu_group_rows if input_ids.is_cuda else self.cpu_group_rows
        pass_cost = self.gpu_pass_cost if input_ids.is_cuda else self.cpu_pass_cost
        if rows <= max_rows and rows * input_ids.size(1) <= pass_cost:
            length = int(positions.max().item()) + 1
            return self._output(self.inner(input_ids[:, :length]))
        sorted_positions, order = torch.sort(positions)
        values, counts = torch.unique_consecutive(sorted_positions, return_counts=True)
        host: List[List[int]] = torch.stack([values + 1, counts]).tolist()  # the one wait for the device
        lengths: List[int] = host[0]
        rows_before: List[int] = [0]  # rows_before[i]: the sorted rows before distinct length i
        for count in host[1]:
            rows_before.append(rows_before[-1] + count)
        ordered = input_ids.index_select(0, order)
        pieces: List[torch.Tensor] = []
        first = 0
        for end in self._plan(lengths, rows_before, max_rows, pass_cost):
            # a group over max_rows runs in chunks, each cut to its own longest row
            bucket = first
            for start in range(rows_before[first], rows_before[end], max_rows):
                stop = min(start + max_rows, rows_before[end])
                while rows_before[bucket + 1] < stop:  # the distinct length of the chunk's last row
                    bucket += 1
                pieces.append(self.inner(ordered[start:stop, : lengths[bucket]]))
            first = end
        ordered_out = torch.cat(pieces)
        return self._output(torch.empty_like(ordered_out).index_copy_(0, order, ordered_out))
