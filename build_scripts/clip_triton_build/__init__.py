"""Build the artifacts of the CLIP text Triton model repository (tokenizer assets, encoder exports)."""
