"""The Jina drop-in's old module path (`uses: clip_text_client.jina_executor.CLIPTextEncoder`):
the executor is `clip_triton_client.jina_executor.CLIPTextEncoder`."""

from clip_triton_client.jina_executor import CLIPTextEncoder

__all__ = ["CLIPTextEncoder"]
