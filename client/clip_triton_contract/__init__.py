"""What every part of the service agrees on, and nothing else: the client, the OpenAI frontend,
the repository build and the local runtime import these names instead of spelling them.

Standard library only, so that any of them can import it without the others' dependencies:

- `names`: models, tensors, parameters and the dims a client reads from the served configs;
- `traffic`: the two traffic classes and their Triton priority levels;
- `access`: which of Triton's API groups sit behind which key, and how a key travels;
- `statuses`: what a Triton status and message mean to a caller (the client's error, the
  frontend's HTTP status, whether to try again).

The model configs (protobuf text, which cannot import Python) spell some of these too; the unit
tests check that the source and every built config agree with this package.
"""
