"""Run inside .venv-jina: a real Jina Deployment with the CLIPTextEncoder drop-in, posting
DocList[TextDoc] and saving the embeddings it returns.  Usage: jina_flow_check.py URL OUT.npy"""

import sys

import numpy as np

TEXTS = ["a photo of a cat", "", "a dog on the beach", "word " * 100, "caf\u00e9 &amp; cr\u00e8me"] * 3


def main(url: str, out: str) -> None:
    from docarray import DocList
    from docarray.documents import TextDoc
    from jina import Deployment

    from clip_triton_client.jina_executor import CLIPTextEncoder

    docs = DocList[TextDoc]([TextDoc(text=t) for t in TEXTS])
    with Deployment(uses=CLIPTextEncoder, uses_with={"url": url, "protocol": "http", "batch_size": 4}) as dep:
        result = dep.post("/", inputs=docs, return_type=DocList[TextDoc])
    rows = [
        np.full(512, np.nan, np.float32) if d.embedding is None else np.asarray(d.embedding, np.float32) for d in result
    ]
    np.save(out, np.stack(rows))
    print(f"jina {__import__('jina').__version__}: {len(result)} docs back")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
