"""OpenAI's embeddings API (POST /v1/embeddings, GET /v1/models) in front of the CLIP ensemble:
an ASGI app on uvicorn that calls Triton over gRPC from asyncio. `python -m clip_openai`."""
