"""Run inside .venv-jina: a real Jina Deployment with a drop-in executor, posting documents and
saving the embeddings it returns (NaN rows for documents left without one).

    jina_flow_check.py URL OUT.npy                      CLIPTextEncoder, DocList[TextDoc] of TEXTS
    jina_flow_check.py URL OUT.npy MODEL FOLDER         CLIPImageEncoder, DocList[ImageDoc] of image_docs(FOLDER)
"""

import sys
from pathlib import Path

import numpy as np

TEXTS = ["a photo of a cat", "", "a dog on the beach", "word " * 100, "caf\u00e9 &amp; cr\u00e8me"] * 3


def image_docs(folder: Path):
    """photo.jpg by path, photo.png by its bytes, pixels.npy as a tensor, a document without an
    image, and one whose bytes are not an image (left without an embedding, its neighbours embedded)."""
    from docarray.documents import ImageDoc

    return [
        ImageDoc(url=str(folder / "photo.jpg")),
        ImageDoc(bytes_=(folder / "photo.png").read_bytes()),
        ImageDoc(tensor=np.load(folder / "pixels.npy")),
        ImageDoc(),
        ImageDoc(bytes_=b"not an image"),
    ]


def main(url: str, out: str, model: str | None = None, folder: str | None = None) -> None:
    from docarray import DocList
    from docarray.documents import ImageDoc, TextDoc
    from jina import Deployment

    from clip_triton_client.jina_executor import CLIPImageEncoder, CLIPTextEncoder

    options = {"url": url, "protocol": "http", "batch_size": 4}
    if folder is None:
        executor, kind, docs = CLIPTextEncoder, TextDoc, [TextDoc(text=t) for t in TEXTS]
    else:
        executor, kind, docs = CLIPImageEncoder, ImageDoc, image_docs(Path(folder))
        options["model"] = model
    with Deployment(uses=executor, uses_with=options) as dep:
        result = dep.post("/", inputs=DocList[kind](docs), return_type=DocList[kind])
    dim = max(len(d.embedding) for d in result if d.embedding is not None)
    rows = [
        np.full(dim, np.nan, np.float32) if d.embedding is None else np.asarray(d.embedding, np.float32) for d in result
    ]
    np.save(out, np.stack(rows))
    print(f"jina {__import__('jina').__version__}: {len(result)} docs back")


if __name__ == "__main__":
    main(*sys.argv[1:])
