"""Reliability: interruption, divergence, bad input and damaged files, each with the behaviour
documented in docs/explanation/reliability.md."""

import json
import math
import os
import signal
import struct
import subprocess
import sys
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

STEPS_PER_EPOCH = 4  # 16 training images, batch 4
EPOCHS = 3

# Runs `segan train ARGS...` in a fresh process, stopped by a signal of its own at a chosen batch
# (no sleeps: where the run stops never depends on timing). Only runs that must die go through a
# fresh process (importing torch and Lightning there costs ~8 s); the others call `main` here.
TRAIN_SCRIPT = r"""
import os, signal, sys
import segan.training as training
from segan.cli import main
sys.path.insert(0, os.environ["SEGAN_TESTS"])
from test_reliability import plateau_scores
stop_at, how = int(os.environ.get("STOP_AT", 0)), os.environ.get("STOP_HOW", "")
# A shell starts background jobs with SIGINT ignored, and Python keeps an inherited "ignore":
# restore Ctrl-C's KeyboardInterrupt, or the test would depend on how it was launched.
signal.signal(signal.SIGINT, signal.default_int_handler)

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.trainer.fit_loop.epoch_loop.batch_progress.total.processed == stop_at:
        os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)

training.SeganModule.on_train_batch_end = on_train_batch_end
if os.environ.get("SEGAN_TEST_PLATEAU"):
    training.SeganModule.on_validation_epoch_end = plateau_scores(training.SeganModule.on_validation_epoch_end)
sys.exit(main(sys.argv[1:]))
"""


def plateau_scores(scores):
    """`SeganModule.on_validation_epoch_end` whose validation IoU falls every epoch, so no epoch
    after the first is a new best."""
    def on_validation_epoch_end(self):
        if not self.trainer.training and not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            return self.log_dict({"val/iou": 0.9 - 0.1 * self.current_epoch, "val/dice": 0.5}, prog_bar=True)
        return scores(self)
    return on_validation_epoch_end


@pytest.fixture
def falling_scores(monkeypatch):
    """In this process: validation IoU falls every epoch (see `plateau_scores`)."""
    monkeypatch.setattr(training.SeganModule, "on_validation_epoch_end",
                        plateau_scores(training.SeganModule.on_validation_epoch_end))


@pytest.fixture(scope="module")
def interrupt_data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("interrupt"), n_train=16, n_val=4, size=64, seed=1)


def tiny_yaml(path: Path, data: Path, out: Path, epochs: int = EPOCHS) -> Path:
    config = tiny_config(data, out, train={"epochs": epochs, "batch_size": 4}, data={"augment": "medium"},
                         loss={"adv_mode": "lsgan", "adv_weight": 0.1})
    config.save(path)
    return path


def run_training(*args: str, stop_at: int = 0, how: str = "", plateau: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, STOP_AT=str(stop_at), STOP_HOW=how, SEGAN_TESTS=str(Path(__file__).parent))
    if plateau:
        env["SEGAN_TEST_PLATEAU"] = "1"
    return subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, "train", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def folder_hashes(folder: Path) -> dict[str, str]:
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def generator_weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"].items()
            if k.startswith(("generator.", "discriminator."))}


@pytest.mark.heavy
@pytest.mark.parametrize("plateau", [True, False], ids=["plateau", "improving"])
def test_kill_9_resumes_from_the_last_epoch_and_ends_with_the_same_weights(tmp_path, interrupt_data, plateau,
                                                                          request):
    """kill -9 in the middle of epoch 2: last.ckpt holds epoch 1 whatever its validation score, and
    the resumed run ends with the weights of a run that was never interrupted."""
    if plateau:
        request.getfixturevalue("falling_scores")  # in this process too
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(["train", "--config", str(tiny_yaml(tmp_path / "a.yaml", interrupt_data, straight))]) == 0
    killed = run_training("--config", str(tiny_yaml(tmp_path / "b.yaml", interrupt_data, broken)), plateau=plateau,
                          stop_at=2 * STEPS_PER_EPOCH + 2, how="kill")
    assert killed.returncode == -signal.SIGKILL
    saved = load_checkpoint(broken / "checkpoints" / "last.ckpt")  # whole, written atomically
    assert training.epochs_done(saved) == 2 and saved["epoch"] == 1
    if plateau:  # the best epoch was the first: last.ckpt was written all the same
        assert load_checkpoint(broken / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert main(["train", "--resume", "--out", str(broken)]) == 0
    summary = json.loads((broken / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert summary == {**json.loads((straight / "summary.json").read_text()), "run_dir": str(broken),
                       "wall_time_s": summary["wall_time_s"]}
    expected, got = generator_weights(straight), generator_weights(broken)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.heavy
def test_ctrl_c_at_a_chosen_batch_saves_that_batch_and_resume_completes(tmp_path, interrupt_data):
    out = tmp_path / "run"
    stopped = run_training("--config", str(tiny_yaml(tmp_path / "c.yaml", interrupt_data, out)),
                           stop_at=STEPS_PER_EPOCH + 2, how="int")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert f"--resume --out {out}" in stopped.stderr and "interrupted" in stopped.stderr
    saved = load_checkpoint(out / "checkpoints" / "last.ckpt")
    # the state at the interrupted batch, not the end of the epoch before it
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == STEPS_PER_EPOCH + 2
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == EPOCHS


def test_a_refused_resume_changes_no_byte_of_the_run(tmp_path, interrupt_data, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_yaml(tmp_path / "c.yaml", interrupt_data, out, epochs=1))]) == 0
    before = folder_hashes(out)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--encoder", "resnet34", "--epochs", "2"]) == 2
    assert "generator.encoder_name: 'resnet18' in the run, 'resnet34' given" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "already trained 1 of 1 epochs" in capsys.readouterr().err
    assert folder_hashes(out) == before
    (out / "config.yaml").write_text("train: [unclosed")
    before = folder_hashes(out)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 2
    error = capsys.readouterr().err
    assert "config.yaml" in error and "not valid YAML" in error
    assert folder_hashes(out) == before


def test_resume_with_more_epochs_rebuilds_the_schedule_and_a_moved_run_keeps_its_best(tmp_path, interrupt_data,
                                                                                      falling_scores):
    first = tmp_path / "first"
    assert main(["train", "--config", str(tiny_yaml(tmp_path / "c.yaml", interrupt_data, first, epochs=2))]) == 0
    moved = tmp_path / "moved"
    import shutil
    shutil.copytree(first, moved)
    before = folder_hashes(first)
    assert main(["train", "--resume", "--out", str(moved), "--epochs", "4"]) == 0
    assert folder_hashes(first) == before  # nothing written to where the run came from
    last = load_checkpoint(moved / "checkpoints" / "last.ckpt")
    assert training.epochs_done(last) == 4
    # cosine over the new end: the last epoch (3 of 0-3) ran at lr * (1 + cos(3 pi / 4)) / 2
    lr = Config.load(moved / "config.yaml").train.lr
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(lr * (1 + math.cos(3 * math.pi / 4)) / 2)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("BestCheckpoint"))
    assert state["best_model_path"] == "best.ckpt" and float(state["best_model_score"]) == pytest.approx(0.9)
    assert load_checkpoint(moved / "checkpoints" / "best.ckpt")["epoch"] == 0  # the plateau's best, kept


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
    other = tiny_config(demo_root, tmp_path / "run", data={"classes": ["a", "b", "c"]}, train={"epochs": 2})
    with pytest.raises(training.ResumeError, match=r"data.classes: \['background', 'foreground'\] in the run"):
        training.train(other, resume=True)
    # a config.yaml edited behind segan's back no longer fits the checkpoint: refused before any write
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
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
    assert all(torch.isfinite(p).all() for p in predictor.network.model.parameters())


def test_a_nonfinite_adversarial_term_skips_the_generator_step_on_the_device(tmp_path, demo_root, monkeypatch):
    """G's loss holds terms read after D's step: its check is not a host wait but the fused
    Adam's found_inf, counted one step late. G's weights and Adam state stay as they were."""
    original = training.AdversarialLoss.forward

    def poisoned(self, logits, real, for_discriminator=True):
        loss = original(self, logits, real, for_discriminator)
        return loss * float("nan") if not for_discriminator and POISON["on"] else loss

    POISON = {"on": False}
    monkeypatch.setattr(training.AdversarialLoss, "forward", poisoned)

    class PoisonAfterFirstEpoch(training.SeganModule):
        def on_train_epoch_start(self):
            super().on_train_epoch_start()
            POISON["on"] = self.current_epoch >= 1

    monkeypatch.setattr(training, "SeganModule", PoisonAfterFirstEpoch)
    config = tiny_config(demo_root, tmp_path / "run", train={"epochs": 8})
    result = training.train(config)
    assert result.stopped and "generator loss was NaN" in result.stopped
    assert result.nonfinite_batches_skipped == training.NONFINITE_PATIENCE
    after_first = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    first_epoch = after_first["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    # the tenth rejected step is counted by the next one, which then stops before stepping
    assert result.steps == first_epoch + training.NONFINITE_PATIENCE + 1
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert after_first["epoch"] == 0
    # parameters, not BatchNorm's running statistics (every forward pass in training mode moves those)
    generator = [name for name in last["state_dict"] if name.startswith("generator.")
                 and not any(part in name for part in ("running_", "num_batches_tracked"))]
    assert all(torch.equal(last["state_dict"][name], after_first["state_dict"][name]) for name in generator)
    discriminator = [name for name in last["state_dict"] if name.startswith("discriminator.")]
    assert any(not torch.equal(last["state_dict"][n], after_first["state_dict"][n]) for n in discriminator)
    g_state = lambda checkpoint: checkpoint["optimizer_states"][0]["state"]  # noqa: E731
    assert all(torch.equal(g_state(last)[k]["step"], g_state(after_first)[k]["step"]) for k in g_state(last))
    assert all(torch.equal(g_state(last)[k]["exp_avg"], g_state(after_first)[k]["exp_avg"]) for k in g_state(last))


def test_a_run_saved_with_unfused_optimisers_resumes(tmp_path, demo_root):
    """Checkpoints written before the optimisers were fused (foreach Adam) resume as fused ones."""
    config = tiny_config(demo_root, tmp_path / "run")
    training.train(config)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    for state in checkpoint["optimizer_states"]:
        for group in state["param_groups"]:
            group.update(fused=None, foreach=None)
    torch.save(checkpoint, last)
    config.train.epochs = 2
    result = training.train(config, resume=True)
    assert result.epochs == 2 and result.nonfinite_batches_skipped == 0
    resumed = load_checkpoint(last)
    assert all(group["fused"] for state in resumed["optimizer_states"] for group in state["param_groups"])


def test_a_discriminator_that_wins_outright_stops_stepping(tmp_path, demo_root, monkeypatch):
    monkeypatch.setitem(training.D_COLLAPSE_LOSS, "vanilla", 1e9)  # every D loss counts as collapsed
    config = tiny_config(demo_root, tmp_path / "run")
    result = training.train(config)
    assert result.d_steps_skipped == result.steps > 0
    # D's optimizer never stepped: Adam has no state for its parameters
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["optimizer_states"][1]["state"]
    assert state == {}


@pytest.mark.parametrize("section, key, value, message", [
    ("data", "size", 100, "use 96"), ("data", "classes", ["only"], "at least 2 different class names"),
    ("data", "ignore_index", 1, "also class 'foreground'"), ("data", "augment", "extreme", "data.augment"),
    ("train", "lr", 0, r"train\.lr: expected a number > 0")])
def test_configs_that_cannot_work_fail_before_reading_data(tmp_path, section, key, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path / "no-data-needed", tmp_path / "run", **{section: {key: value}})
    config = tiny_config(tmp_path / "no-data-needed", tmp_path / "run")
    setattr(getattr(config, section), key, value)  # a config changed after it was built is caught too
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
    assert "0002.png: not a readable image" in err
    assert f"mask values [7] in 1 mask (1024 pixels): {data / 'train' / 'masks' / '0003.png'}" in err
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
    original = batch_predict.atomic_write

    def fills_up(path, data):
        # Decided by name, not by a count: masks are written by two threads in any order.
        if path.suffix == ".png" and path.stem not in ("0", "1"):
            raise OSError(28, "No space left on device")
        original(path, data)

    monkeypatch.setattr(batch_predict, "atomic_write", fills_up)
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


@pytest.mark.heavy(90)
def test_compiled_training_resumes_exactly_keeps_the_plain_networks_and_runs_under_ddp(tmp_path, interrupt_data):
    """train.compile true: kill -9 in epoch 2 and resume ends with the weights of a straight compiled
    run; the checkpoints hold the plain networks' keys (they load into an uncompiled module); the
    exported generator loads in plain smp; a two-process DDP run completes. One test, so that the
    later runs reuse the compiled code inductor cached on disk (same networks, same shapes)."""
    import segmentation_models_pytorch as smp
    from torch._dynamo.utils import counters
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    graphs = counters["stats"]["unique_graphs"]
    assert main(["train", "--config", str(tiny_yaml(tmp_path / "a.yaml", interrupt_data, straight)),
                 "--compile", "true"]) == 0
    assert counters["stats"]["unique_graphs"] > graphs  # it did compile
    killed = run_training("--config", str(tiny_yaml(tmp_path / "b.yaml", interrupt_data, broken)), "--compile", "true",
                          stop_at=2 * STEPS_PER_EPOCH + 2, how="kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert main(["train", "--resume", "--out", str(broken)]) == 0
    expected, got = generator_weights(straight), generator_weights(broken)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)

    saved = load_checkpoint(broken / "checkpoints" / "best.ckpt")
    config = saved["hyper_parameters"]["config"]
    assert config["train"]["compile"] is True
    plain = training.SeganModule({**config, "train": {**config["train"], "compile": False}})
    assert plain.state_dict().keys() == saved["state_dict"].keys()
    plain.load_state_dict(saved["state_dict"])  # strict: every key, none under "_orig_mod."
    image = torch.randn(2, 3, 64, 64)
    exported = smp.from_pretrained(str(broken / "generator")).eval()
    generator = plain.generator.eval().to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        torch.testing.assert_close(exported(image), generator(image), rtol=0, atol=0)

    ddp = tmp_path / "ddp"
    config = tiny_config(interrupt_data, ddp, train={"epochs": 1, "batch_size": 4, "devices": 2, "compile": True})
    config.save(tmp_path / "ddp.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "segan", "train", "--config", str(tmp_path / "ddp.yaml")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # 16 training images, 4 per device per step, 2 devices: 2 steps. (Uncompiled DDP: tests/test_semi.py.)
    assert json.loads((ddp / "summary.json").read_text())["steps"] == 2
    assert (ddp / "generator" / "model.safetensors").is_file()
