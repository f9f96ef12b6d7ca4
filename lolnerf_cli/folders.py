"""Folder layouts: where a dataset folder (DATA/) and a run folder (RUN/) keep each file (docs/formats.md).
The files' contents are read and written by formats.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .formats import IMAGE_SUFFIXES, first_shared_stem


# ----------------------------------------------------------------------------------------- dataset folder
@dataclass
class DatasetPaths:
    root: Path

    images = property(lambda self: self.root / "images")
    masks = property(lambda self: self.root / "masks")
    landmarks = property(lambda self: self.root / "landmarks.json")
    transforms = property(lambda self: self.root / "transforms.json")
    keypoints = property(lambda self: self.root / "keypoints.json")

    def mask_for(self, file_path: str) -> Path:
        return self.masks / (Path(file_path).stem + ".png")


def dataset(root: str | Path, must_exist: bool = True) -> DatasetPaths:
    root = Path(root)
    if must_exist and not root.is_dir():
        raise InputError(root, "dataset folder not found")
    return DatasetPaths(root)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(folder, "contains no .png or .jpg images")
    shared = first_shared_stem(files)
    if shared is not None:
        i, earlier = shared
        raise InputError(files[i], f"has the same name as {earlier.name}; masks and cameras are matched by "
                                   "file name without extension, so rename one")
    return files


# ----------------------------------------------------------------------------------------- run folder
@dataclass
class RunPaths:
    root: Path

    config = property(lambda self: self.root / "config.json")
    model = property(lambda self: self.root / "model.safetensors")
    trainer = property(lambda self: self.root / "trainer.safetensors")
    trainer_json = property(lambda self: self.root / "trainer.json")
    keypoints = property(lambda self: self.root / "keypoints.json")
    cameras = property(lambda self: self.root / "cameras.json")       # refined training cameras (train)
    images = property(lambda self: self.root / "images.json")
    log = property(lambda self: self.root / "log.jsonl")
    previews = property(lambda self: self.root / "previews")


def run_folder(root: str | Path, must_exist: bool = True) -> RunPaths:
    run = RunPaths(Path(root))
    if must_exist:
        if not run.root.is_dir():
            raise InputError(run.root, "run folder not found (train a model with `lolnerf train DATA --out RUN`)")
        for p in (run.config, run.model):
            if not p.is_file():
                raise InputError(p, "missing from the run folder; is this a folder written by `lolnerf train`?")
    return run
