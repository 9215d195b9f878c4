"""The tokenizer's pieces: tokenizer.json from CLIP's BPE vocabulary (assets), and the C++
Triton backend that serves it (backend: its build; the sources are native/clip_bpe/)."""
