"""clip-triton-embed --images against the real image server: a folder or a list of image files in,
HF's image embeddings out in order, a bad file reported by line and path while the rest embed, and
a finished job that knows it is finished."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from images import embeddable, encoded, photo

from helpers import hf_image_features


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "clip_triton_client.cli", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def photos(folder: Path) -> dict[str, bytes]:
    """Image files under `folder` (one nested), a file that is no image, and one that is not named
    as an image: relative path -> bytes of the image files the job must embed, in sorted order."""
    files = {
        "b/nested/c.png": embeddable()["png"],
        "a.jpg": embeddable()["jpeg"],
        "d.webp": embeddable()["webp"],
        "e.gif": embeddable()["animated gif"],
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image, and not named as one")
    (folder / ".hidden.jpg").write_bytes(b"hidden files are left out")
    return dict(sorted(files.items()))


def test_a_folder_becomes_rows_in_sorted_path_order_and_a_broken_file_is_named(
    image_server, image_references, tmp_path
):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = photos(folder)
    (folder / "broken.jpg").write_bytes(embeddable()["jpeg"][:500])
    out = tmp_path / "photos.npy"
    done = run_cli("--images", str(folder), "-o", str(out), "--url", image_server.grpc_url, "--model", "b16")
    assert done.returncode == 1, done.stderr  # one file failed: reported, the rest written
    assert "line 3: broken.jpg: " in done.stderr and "1 failed" in done.stderr
    got = np.load(out)
    order = sorted([*files, "broken.jpg"])
    assert got.shape == (len(order), 512)
    assert np.isnan(got[order.index("broken.jpg")]).all()
    rows = [order.index(name) for name in files]
    np.testing.assert_allclose(got[rows], hf_image_features(image_references["b16"], list(files.values())), atol=1e-4)
    again = run_cli("--images", str(folder), "-o", str(out), "--url", image_server.grpc_url, "--model", "b16")
    assert again.returncode == 1 and "already finished" in again.stderr
    (folder / "f.png").write_bytes(encoded(photo(40, 40), "PNG"))  # another listing: another job
    changed = run_cli("--images", str(folder), "-o", str(out), "--url", image_server.grpc_url, "--model", "b16")
    assert changed.returncode == 2 and "--restart" in changed.stderr


def test_a_list_of_paths_becomes_jsonl_records_with_the_path_and_its_embedding(
    image_server, image_references, tmp_path
):
    (tmp_path / "lists" / "pics").mkdir(parents=True)
    jpeg, png = embeddable()["jpeg"], embeddable()["grayscale png"]
    (tmp_path / "lists" / "pics" / "cat.jpg").write_bytes(jpeg)
    (tmp_path / "elsewhere.png").write_bytes(png)
    listing = tmp_path / "lists" / "images.txt"
    listing.write_text(f"pics/cat.jpg\n{tmp_path / 'elsewhere.png'}\n\npics/missing.jpg\n")
    out = tmp_path / "out.jsonl"
    done = run_cli("--images", str(listing), "-o", str(out), "--url", image_server.grpc_url, "--model", "b32")
    assert done.returncode == 1 and "line 4: pics/missing.jpg: cannot read" in done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in records] == ["pics/cat.jpg", str(tmp_path / "elsewhere.png"), "", "pics/missing.jpg"]
    expected = hf_image_features(image_references["b32"], [jpeg, png])
    np.testing.assert_allclose([records[0]["embedding"], records[1]["embedding"]], expected, atol=1e-4)
    assert "embedding" not in records[2] and "cannot read" in records[3]["error"]
