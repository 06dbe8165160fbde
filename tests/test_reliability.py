"""Reliability: interruption, divergence, bad input and damaged files, each with the behaviour
documented in docs/reliability.md."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import segan.training as training
from segan.checkpointing import AtomicCheckpointIO, CheckpointError, load_checkpoint
from segan.cli import main
from segan.config import Config, validate
from segan.data import ImageReadError, make_demo_dataset, read_image
from segan.inference import Predictor, RunFolderError

from conftest import make_run, tiny_config

STEPS_PER_EPOCH = 20  # 40 training images, batch 2


@pytest.fixture(scope="module")
def interrupt_data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("interrupt"), n_train=40, n_val=4, size=64, seed=1)


def tiny_yaml(path: Path, data: Path, out: Path, epochs: int = 4) -> Path:
    config = tiny_config(data, out, train={"epochs": epochs, "batch_size": 2})
    config.save(path)
    return path


def start_training(config: Path, resume_out: Path | None = None) -> subprocess.Popen:
    args = ["--resume", "--out", str(resume_out)] if resume_out else ["--config", str(config)]
    return subprocess.Popen([sys.executable, "-m", "segan", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def resume_to_the_end(out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "segan", "train", "--resume", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_kill_9_mid_epoch_then_resume_finishes_with_the_same_steps(tmp_path, interrupt_data):
    out = tmp_path / "run"
    process = start_training(tiny_yaml(tmp_path / "c.yaml", interrupt_data, out))
    last = out / "checkpoints" / "last.ckpt"
    wait_for(last, process)  # end of epoch 0
    time.sleep(0.5)  # into epoch 1
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved = load_checkpoint(last)  # written atomically: whole, whatever the moment of the kill
    assert saved["global_step"] > 0
    summary = resume_to_the_end(out)
    assert summary["epochs"] == 4 and summary["steps"] == 4 * STEPS_PER_EPOCH
    final = load_checkpoint(last)
    assert final["global_step"] == 2 * 4 * STEPS_PER_EPOCH  # Lightning counts the G and the D step


def test_ctrl_c_saves_the_state_at_that_batch_and_resume_completes(tmp_path, interrupt_data):
    out = tmp_path / "run"
    process = start_training(tiny_yaml(tmp_path / "c.yaml", interrupt_data, out))
    last = out / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr and "interrupted" in stderr
    interrupted_at = load_checkpoint(last)["global_step"]
    assert interrupted_at >= 2 * STEPS_PER_EPOCH
    summary = resume_to_the_end(out)
    assert summary["steps"] == 4 * STEPS_PER_EPOCH


def test_atomic_checkpoint_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_damaged_and_foreign_checkpoints_are_clear_errors(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.ckpt is damaged"):
        load_checkpoint(truncated)

    class Payload:  # what a malicious checkpoint would carry
        def __reduce__(self):
            return (os.system, ("echo owned",))

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, pickled)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(pickled)


def test_resume_from_a_truncated_checkpoint_names_it(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path / "run")
    training.train(config)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="last.ckpt is damaged"):
        training.train(config, resume=True)


def test_resume_with_a_checkpoint_of_another_model_is_a_clear_error(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path / "run")
    training.train(config)
    other = tiny_config(demo_root, tmp_path / "run", data={"classes": ["a", "b", "c"]})
    with pytest.raises(CheckpointError, match="another model"):
        training.train(other, resume=True)


def test_nan_loss_is_skipped_then_stops_and_keeps_the_best_checkpoint(tmp_path, demo_root, monkeypatch):
    original = training.SeganModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.current_epoch >= 1:  # epoch 0 trains normally and writes best.ckpt
            batch = dict(batch, image=batch["image"] * float("nan"))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(training.SeganModule, "training_step", poisoned)
    config = tiny_config(demo_root, tmp_path / "run", train={"epochs": 8})
    result = training.train(config)
    assert result.stopped and "NaN or infinite" in result.stopped
    assert result.nonfinite_batches_skipped == training.NONFINITE_PATIENCE
    assert result.epochs < 8
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert best["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point())
    predictor = Predictor.from_pretrained(tmp_path / "run", device="cpu")  # the exported generator is the good one
    assert all(torch.isfinite(p).all() for p in predictor.model.parameters())


def test_a_discriminator_that_wins_outright_stops_stepping(tmp_path, demo_root, monkeypatch):
    monkeypatch.setattr(training, "D_COLLAPSE_LOSS", 1e9)  # every D loss counts as collapsed
    config = tiny_config(demo_root, tmp_path / "run")
    result = training.train(config)
    assert result.d_steps_skipped == result.steps > 0
    # D's optimizer never stepped: Adam has no state for its parameters
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["optimizer_states"][1]["state"]
    assert state == {}


@pytest.mark.parametrize("overrides, message", [
    ({"data": {"size": 100}}, "use 96"),
    ({"data": {"classes": ["only"]}}, "at least two"),
    ({"data": {"ignore_index": 1}}, "also class 'foreground'"),
    ({"data": {"augment": "extreme"}}, "data.augment"),
    ({"train": {"lr": 0}}, "must be positive"),
])
def test_configs_that_cannot_work_fail_before_reading_data(tmp_path, overrides, message):
    config = tiny_config(tmp_path / "no-data-needed", tmp_path / "run", **overrides)
    with pytest.raises(ValueError, match=message):
        validate(config)
    with pytest.raises(ValueError, match=message):
        training.train(config)
    assert not (tmp_path / "run").exists()


def test_bad_files_stop_training_before_the_first_step(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "d", n_train=6, n_val=2, size=32, seed=0)
    (data / "train" / "images" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    cv2.imwrite(str(data / "train" / "masks" / "0003.png"), np.full((32, 32), 7, np.uint8))
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--size", "32", "--epochs", "1",
                 "--classes", "background", "disc", "other"])  # 255 in the masks is then ignored, 7 is wrong
    err = capsys.readouterr().err
    assert code == 2 and "nothing was trained" in err
    assert "0002.png: not a readable image" in err and "0003.png: mask values [7]" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height pixels: the shape of a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageReadError, match=r"bomb.png: declares 100000x100000 pixels.*--max-image-pixels"):
        read_image(bomb)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 400), np.uint8))
    import segan.data.io as io
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.raises(ImageReadError, match="above the limit of 100000"):
        read_image(big)
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 120_000)
    assert read_image(big).shape == (300, 400, 3)


def test_predict_reports_a_bomb_and_writes_the_rest(tmp_path):
    run = make_run(tmp_path / "run")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        cv2.imwrite(str(inputs / f"ok_{i}.png"), np.full((40, 48, 3), 60 * i, np.uint8))
    (inputs / "bomb.png").write_bytes(png_header_only(60_000, 60_000))
    code = main(["predict", "--model", str(run), "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--num-workers", "0", "--no-progress", "--device", "cpu"])
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["ok_0.png", "ok_1.png", "ok_2.png"]
    assert "declares 60000x60000" in (tmp_path / "out" / "manifest.csv").read_text()


def test_unicode_and_spaces_in_paths(tmp_path):
    root = tmp_path / "données médicales" / "série 1"
    data = make_demo_dataset(root, n_train=4, n_val=2, size=32, seed=0)
    for name in ("image à.png", "画像 2.png"):
        cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
        (tmp_path / "x.png").rename(data / "validation" / "images" / name)
        cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8), np.uint8))
        (tmp_path / "x.png").rename(data / "validation" / "masks" / name)
    assert main(["data", "check", str(data), "--no-progress"]) == 0
    run = make_run(tmp_path / "modèle 1")
    out = tmp_path / "sortie à"
    assert main(["predict", "--model", str(run), "--input", str(data / "validation" / "images"), "--output", str(out),
                 "--num-workers", "0", "--no-progress", "--device", "cpu"]) == 0
    assert (out / "masks" / "画像 2.png").is_file()


def test_symlink_loop_in_the_input_does_not_hang(tmp_path):
    run = make_run(tmp_path / "run")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    cv2.imwrite(str(inputs / "sub" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    (inputs / "sub" / "loop").symlink_to(inputs, target_is_directory=True)
    assert main(["predict", "--model", str(run), "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--num-workers", "0", "--no-progress", "--device", "cpu"]) == 0
    assert [p.name for p in (tmp_path / "out" / "masks").rglob("*.png")] == ["a.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions, so a read-only folder stays writable")
def test_read_only_output_folder_is_refused_up_front(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "a.png"), "--output", str(out)]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_full_disk_during_predict_reports_and_keeps_what_was_written(tmp_path, monkeypatch):
    import segan.batch_predict as batch_predict
    run = make_run(tmp_path / "run")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        cv2.imwrite(str(inputs / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    original, written = batch_predict._atomic_write, []

    def fills_up(path, data):
        if path.suffix == ".png" and len(written) >= 2:
            raise OSError(28, "No space left on device")
        original(path, data)
        written.append(path)

    monkeypatch.setattr(batch_predict, "_atomic_write", fills_up)
    code = main(["predict", "--model", str(run), "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--num-workers", "0", "--no-progress", "--device", "cpu", "--batch-size", "1"])
    assert code == 1
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == ["0.png", "1.png"]
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert manifest.count("No space left on device") == 3 and manifest.count("written") == 2


def test_run_folder_pieces_missing_damaged_or_mismatched(tmp_path):
    run = make_run(tmp_path / "run")
    weights = run / "generator" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 3])
    with pytest.raises(RunFolderError, match="cannot load the generator"):
        Predictor.from_pretrained(run, device="cpu")
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(RunFolderError, match="cannot load the generator"):
        Predictor.from_pretrained(run, device="cpu")
    weights.write_bytes(original)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["classes"] = ["a", "b", "c", "d"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RunFolderError, match="belong to different runs.*classes 1 in the generator but 4"):
        Predictor.from_pretrained(run, device="cpu")
    (run / "config.yaml").write_text("data: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        Predictor.from_pretrained(run, device="cpu")
    (run / "config.yaml").unlink()
    assert main(["predict", "--model", str(run), "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2


FUZZ_SCRIPT = r"""
import random, sys, cv2, numpy as np
from segan.data.io import ImageReadError, read_image
from segan.data.encoding import read_mask, MaskEncoding
from pathlib import Path
rng = random.Random(int(sys.argv[2]))
tmp = Path(sys.argv[1])
seeds = []
for ext in (".png", ".jpg", ".tif", ".bmp", ".ppm"):
    ok, data = cv2.imencode(ext, (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3))
    seeds.append((ext, data.tobytes()))
outcomes = {"decoded": 0, "refused": 0}
for i in range(int(sys.argv[3])):
    ext, data = rng.choice(seeds)
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        data = bytearray(rng.randbytes(rng.randrange(0, 2000)))
    elif kind == 1:
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:
        data = data[: rng.randrange(len(data))]
    else:
        start = rng.randrange(len(data))
        data[start:start + 8] = rng.randbytes(8)
    path = tmp / f"f{i}{ext}"
    path.write_bytes(bytes(data))
    for reader in (lambda p: read_image(p, 3), lambda p: read_mask(p, MaskEncoding(4))):
        try:
            reader(path)
            outcomes["decoded"] += 1
        except ImageReadError:
            outcomes["refused"] += 1
    path.unlink()
print(outcomes)
"""


def test_fuzzed_bytes_through_the_loaders_never_crash_the_process(tmp_path):
    """Random and mutated files: each decodes or raises ImageReadError; no other exception, no
    crash of the process (run apart, so a segfault in a decoder fails this test, not the suite)."""
    done = subprocess.run([sys.executable, "-c", FUZZ_SCRIPT, str(tmp_path), "1234", "400"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = eval(done.stdout.strip().splitlines()[-1])
    assert outcomes["decoded"] + outcomes["refused"] == 800 and outcomes["refused"] > 100


def test_unwritable_output_folder_is_refused_up_front_even_as_root(tmp_path, capsys, monkeypatch):
    """Root ignores permissions, so the refusal is simulated: the probe write fails as it would."""
    run = make_run(tmp_path / "run")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    original = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith(".segan-write-test"):
            raise PermissionError(13, "Permission denied")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err
    assert not (tmp_path / "out" / "masks").exists()
