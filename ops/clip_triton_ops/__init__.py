"""Operator commands that work against any running Triton that serves the repository (a local
runtime, compose, Kubernetes, a shared fleet):

- `python -m clip_triton_ops.deploy`: load a built repository's models into a running server
  through the repository API, with a GPU layout and an optional name prefix;
- `python -m clip_triton_ops.verify`: compare what a server answers with the exported model run
  in-process, text by text.
"""
