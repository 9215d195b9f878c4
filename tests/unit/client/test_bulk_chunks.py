"""How the bulk job sizes its chunks (clip_triton_client.bulk.ChunkSizes): about CHECKPOINT_SECONDS
of work at the rate the last chunk was embedded, between one round of requests and --chunk-lines."""

from clip_triton_client.bulk import CHECKPOINT_SECONDS, ChunkSizes


def test_the_first_chunk_is_one_round_of_requests():
    assert ChunkSizes(first=128, most=8192).next == 128
    assert ChunkSizes(first=128, most=16).next == 16  # --chunk-lines is the most, always


def test_a_slow_server_gets_small_chunks_and_a_fast_one_big_ones():
    sizes = ChunkSizes(first=128, most=8192)
    sizes.finished(lines=128, seconds=1.0)  # 128 lines/s: a CPU server
    assert sizes.next == int(128 * CHECKPOINT_SECONDS)
    sizes.finished(lines=256, seconds=0.01)  # 25,600 lines/s: a GPU
    assert sizes.next == 8192
    sizes.finished(lines=8192, seconds=600.0)  # slower than one round of requests in the time
    assert sizes.next == 128
