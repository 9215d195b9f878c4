"""The tokenizer's pieces: tokenizer.json from CLIP's BPE vocabulary (assets), and the C++
Triton backend that serves it (backend: the build; csrc/: the tokenizer core, clip_bpe.h, and
the backend's glue)."""
