"""The client's old import path, kept so that existing code runs: use `clip_triton_client`.

The client was named for texts alone; it is `clip_triton_client` (distribution
`clip-triton-client`, class `CLIPClient`, CLI `clip-triton-embed`) now that the service embeds
more than texts. Importing this package, or any of its old modules
(`clip_text_client.client`, `.bulk`, `.cli`, `.jina_executor`, ...), warns once with a
DeprecationWarning and hands back the new modules themselves, so classes and errors are the same
objects under both names.
"""

import importlib
import sys
import warnings

import clip_triton_client
from clip_triton_client import *  # noqa: F403
from clip_triton_client import __all__ as _new_all

warnings.warn(
    "clip_text_client is deprecated: import clip_triton_client (CLIPTextClient is CLIPClient)",
    DeprecationWarning,
    stacklevel=2,
)

CLIPTextClient = clip_triton_client.CLIPClient
__all__ = [*_new_all, "CLIPTextClient"]

# Old submodule paths resolve to the new modules (one object per module, not a copy).
for _name in ("bulk", "client", "errors", "records", "transport", "writers"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"clip_triton_client.{_name}")
