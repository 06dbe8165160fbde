"""`segan plan`: the fingerprint of synthetic datasets with known properties, and the settings
chosen from it with a step time the test decides (never the machine's)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from segan.cli import main
from segan.config import Config, DataConfig, merge
from segan.data.check import check_dataset
from segan.plan import Probe, make_plan

from conftest import tiny_config, write

SIDE = 256


def dataset(root: Path, draw, image_dtype=np.uint8, colour: bool = True, n_train: int = 8, n_val: int = 2) -> Path:
    """`train/` and `validation/` with images/ and masks/; `draw(index)` returns a mask."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("validation", n_val)):
        for index in range(count):
            mask = draw(index)
            if image_dtype == np.uint16:
                image = np.where(np.arange(SIDE)[None, :] < SIDE // 2, 1000, 3000).repeat(SIDE, 0).astype(np.uint16)
            else:
                image = rng.integers(0, 256, (SIDE, SIDE, 3) if colour else (SIDE, SIDE), dtype=np.uint8)
            write(root / split / "images" / f"{index}.png", image)
            write(root / split / "masks" / f"{index}.png", mask)
    return root


def thin_lines(index: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    for x in range(20, SIDE - 20, 40):
        mask[10:SIDE - 10, x:x + 3] = 255  # 3 px wide
    return mask


def disks(index: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    cv2.circle(mask, (128, 128), 30, 255, -1)  # 61 px across
    return mask


def imbalanced(index: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[:, :SIDE // 4] = 1  # a quarter of every image
    mask[100:104, 100:104] = 2  # 16 pixels
    return mask


def fake_timer(config: Config, epoch_end_s: float = 0.0) -> Probe:
    # seconds per step: 1e-5 per pixel, whatever the batch; validating an image: a sixth of a
    # step (a third of a training image's cost in batches of 2)
    step_s = 1e-5 * config.data.size ** 2
    return Probe(step_s=step_s, validation_image_s=step_s / 6, epoch_end_s=epoch_end_s)


def fingerprint_of(root: Path, **data) -> dict:
    config = DataConfig(root=str(root), **data)
    report = check_dataset(config, progress=False, fingerprint=True)
    assert report.ok, report.errors
    split = next(split for split in report.splits if split.fingerprint is not None)
    assert split.name == "train"
    return split.fingerprint.to_dict(config.classes)


def test_fingerprint_of_thin_structures(tmp_path):
    found = fingerprint_of(dataset(tmp_path, thin_lines))
    assert found["images"] == 8 and found["width"]["median"] == SIDE and found["bits"] == [8]
    assert found["channels"] == [3] and found["colour"] is True
    lines = found["classes"]["foreground"]
    assert lines["object_width_px"] == {"p10": 3.0, "median": 3.0, "p90": 3.0} and lines["thin"] is True
    assert lines["objects"] == 8 * 6 and lines["images_with_it"] == 8
    assert lines["image_share"]["median"] == pytest.approx(6 * 3 * (SIDE - 20) / SIDE ** 2, abs=1e-4)


def test_fingerprint_of_imbalanced_classes(tmp_path):
    found = fingerprint_of(dataset(tmp_path, imbalanced), classes=["background", "large", "rare"])
    assert found["classes"]["large"]["image_share"]["median"] == 0.25
    assert found["classes"]["rare"]["image_share"]["median"] == pytest.approx(16 / SIDE ** 2, abs=1e-4)
    assert found["classes"]["rare"]["object_area"]["median"] == pytest.approx(16 / SIDE ** 2, abs=1e-5)
    assert found["classes"]["rare"]["object_width_px"]["median"] == 3.0  # 4 px square: 2 x 2 - 1 on the discrete ridge
    assert found["classes"]["rare"]["thin"] is True and found["classes"]["large"]["thin"] is False


def test_fingerprint_of_16_bit_greyscale(tmp_path):
    found = fingerprint_of(dataset(tmp_path, disks, image_dtype=np.uint16))
    assert found["bits"] == [16] and found["channels"] == [1] and found["colour"] is False
    assert found["intensity"] == [1000.0, 3000.0]
    assert found["classes"]["foreground"]["object_width_px"]["median"] == pytest.approx(61, abs=2)
    assert found["classes"]["foreground"]["thin"] is False


def test_plan_resizes_wide_objects_and_sizes_them_to_the_budget(tmp_path):
    # 8 training images in batches of 2: 4 steps an epoch. At 1e-5 s per pixel, an epoch at side S
    # takes 4e-5 S^2 s plus validation (2 images, a third of a training image's cost each):
    # 4.33e-5 S^2. 95 % of 15 minutes (855 s; the rest for start-up and the final scoring) hold
    # 2200 steps (550 epochs) up to S = 189: the plan takes 160, and 855 s / 1.109 s = 770 epochs.
    # At 192 they would hold 535 epochs, 2,140 steps.
    root = dataset(tmp_path / "data", disks)
    timed = []

    def timer(config: Config) -> Probe:
        timed.append(config.generator.decoder_width)
        return fake_timer(config)

    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "15m", timer=timer)
    config = plan.config
    assert (config.data.resize, config.data.size, config.train.batch_size) == ("resize", 160, 2)
    assert config.train.epochs == 770 and config.train.time_budget == "15m"
    assert config.train.min_epoch_steps is None  # validation is a tenth of an epoch of one pass
    assert config.data.in_channels == 3 and config.data.augment == "medium"
    assert config.generator.encoder_name == "tu-efficientnet_lite0"
    assert any(reason.startswith("data.size 160: the largest at which 15m holds 2200 steps") for reason in plan.reasons)
    # the decoder is halved after the size, which the step at smp's width decided
    assert timed == [256] and config.generator.decoder_width == 128
    assert any(reason.startswith("generator.decoder_width 128 (not smp's 256): the images are resized")
               for reason in plan.reasons)
    (tmp_path / "plan.yaml").write_text(plan.to_yaml())
    assert Config.load(tmp_path / "plan.yaml").generator.decoder_width == 128


def test_plan_lengthens_the_epochs_of_a_small_set_until_validation_is_a_tenth(tmp_path):
    # 8 training images in batches of 2 (4 steps a pass), 8 validation images. At 1e-5 s per
    # pixel a step at side S takes 1e-5 S^2 s and validation 8 / 2 / 3 of one: 1.33e-5 S^2, so
    # validation is a tenth of an epoch's training at 14 steps (3.5 passes). An epoch then takes
    # 1.533e-4 S^2 s; 855 s hold 158 such epochs (2,212 steps) up to S = 187: the plan takes 160,
    # where 855 / 3.925 s = 217 epochs of 14 steps fit.
    root = dataset(tmp_path / "data", disks, n_train=8, n_val=8)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "15m", timer=fake_timer)
    config = plan.config
    assert (config.data.size, config.train.batch_size) == (160, 2)
    assert (config.train.min_epoch_steps, config.train.epochs) == (14, 217)
    assert any(reason.startswith("train.min_epoch_steps 14: one pass over the 8 training images is 4 steps")
               for reason in plan.reasons)


def test_plan_counts_checkpoints_and_pictures_in_an_epochs_end(tmp_path):
    # As above with 2 validation images (3.33e-6 S^2 s) and 1 s of checkpoints and pictures at
    # each epoch's end. At S = 160 a step takes 0.256 s and the end 1.085 s: a tenth of 43 steps.
    # An epoch takes 12.09 s; 855 s hold 70 epochs, 3,010 steps. At 192 (31 steps, 12.55 s
    # epochs) they would hold 68 epochs, 2,108 steps: under 2,200.
    root = dataset(tmp_path / "data", disks, n_train=8, n_val=2)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "15m",
                     timer=lambda config: fake_timer(config, epoch_end_s=1.0))
    config = plan.config
    assert (config.data.size, config.train.min_epoch_steps, config.train.epochs) == (160, 43, 70)
    assert any(reason.startswith("train.min_epoch_steps 43: one pass over the 8 training images is 4 steps "
                                 "(1.0 s), where an epoch's end takes about 1.1 s (validating 2 images 0.1 s, "
                                 "checkpoints and pictures 1.0 s)") for reason in plan.reasons)


def test_plan_validates_every_kth_epoch_where_epochs_cannot_grow(tmp_path):
    # 8 training images in batches of 2, 60 validation images, 2 minutes. Even at 128 px (a step of
    # 0.164 s) 2200 steps do not fit, so the plan takes the smallest size. Validating takes 1.64 s;
    # to be a tenth of an epoch's training an epoch would need 100 steps, but it may be at most
    # 1/30 of the 114 s usable: 23 steps (3.77 s). Validation is then 43 % of the training: every
    # 5th epoch keeps it to about 10 %. An epoch then counts 3.77 + 1.64 / 5 = 4.10 s, and the last
    # epoch's validation is kept back: (114 - 0.8 * 1.64) / 4.10 = 27 epochs, where validating every
    # epoch (5.41 s) would leave 21.
    root = dataset(tmp_path / "data", disks, n_train=8, n_val=60)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "2m", timer=fake_timer)
    config = plan.config
    assert (config.data.size, config.train.min_epoch_steps) == (128, 23)
    assert (config.train.validate_every, config.train.epochs) == (5, 27)
    assert any(reason.startswith("train.validate_every 5: validating the 60 validation images takes about 2 s, 43% "
                                 "of an epoch's 4 s of training on this machine; validating once every 5 epochs (and "
                                 "the first and last) keeps it to about 10%") for reason in plan.reasons)


@pytest.mark.parametrize("compiled_step, compile_s, chosen", [(0.8, 100.0, True), (0.8, 2000.0, False),
                                                               (1.05, 10.0, False)])
def test_plan_compiles_where_the_compiled_step_pays_for_its_compile_time(tmp_path, compiled_step, compile_s, chosen):
    # A 2h budget (6840 s usable). A compiled step 0.8x as long after 100 s of compiling fits
    # 6740 / 0.8 = 8425 step-lengths against 6840: on. After 2000 s, 6050: off. A slower one: off.
    root = dataset(tmp_path / "data", disks)
    timed = []

    def timer(config: Config) -> Probe:
        timed.append(config.train.compile)
        probe = fake_timer(config)
        if config.train.compile is True:
            return dataclasses.replace(probe, step_s=probe.step_s * compiled_step, first_step_s=compile_s)
        return probe

    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "2h", timer=timer)
    assert timed == ["auto", True] and plan.config.train.compile is chosen
    reason = next(reason for reason in plan.reasons if reason.startswith("train.compile"))
    assert reason.startswith(f"train.compile {str(chosen).lower()}: a compiled step took "
                             f"{0.65536 * compiled_step:.2f} s against 0.66 s ({1 / compiled_step:.2f}x) after "
                             f"{compile_s:.0f} s of compiling, so 2h holds {'more' if chosen else 'fewer'} steps")
    # under an hour it is not probed, and a choice in the base config is kept without probing
    timed.clear()
    short = make_plan(Config.from_dict({"data": {"root": str(root)}}), "30m", timer=timer)
    assert timed == ["auto"] and short.config.train.compile is False
    assert any(reason.startswith("train.compile false: not probed for a budget under 1h") for reason in short.reasons)
    timed.clear()
    kept = make_plan(Config.from_dict({"data": {"root": str(root)}, "train": {"compile": True}}), "2h", timer=timer)
    assert timed == [True] and kept.config.train.compile is True
    assert not any(reason.startswith("train.compile") for reason in kept.reasons)


def test_plan_takes_native_crops_of_thin_structures(tmp_path):
    root = dataset(tmp_path / "data", thin_lines, colour=False)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "10m", timer=fake_timer)
    assert plan.config.data.resize == "crop" and plan.config.data.in_channels == 1
    assert plan.config.generator.decoder_width == 256  # on native crops the half-width decoder measured no gain
    assert any("'foreground' objects are about 3.0 px wide at native resolution, thin (under 8 px)" in reason
               for reason in plan.reasons)


def test_plan_takes_native_crops_where_resizing_a_long_side_would_make_objects_thin(tmp_path):
    # 512x128 images with bands 9 px wide: not thin, but every size up to the short side (128)
    # shrinks the long side 4x, which would leave them 2.25 px wide.
    for split, count in (("train", 8), ("validation", 2)):
        for index in range(count):
            mask = np.zeros((128, 512), np.uint8)
            mask[:, 100:109] = 255
            write(tmp_path / split / "images" / f"{index}.png", np.full((128, 512, 3), index * 20, np.uint8))
            write(tmp_path / split / "masks" / f"{index}.png", mask)
    plan = make_plan(Config.from_dict({"data": {"root": str(tmp_path)}}), "10m", timer=fake_timer)
    assert plan.fingerprint["classes"]["foreground"]["thin"] is False
    assert (plan.config.data.resize, plan.config.data.size) == ("crop", 128)
    assert ("data.resize crop: 'foreground' objects are about 9.0 px wide at native resolution, and would be under "
            "8 px at every size up to 128 px, since resizing shrinks the 512 px side most, so training takes") \
        in " ".join(plan.reasons)


@pytest.mark.parametrize("free_gib, batch, size, why", [
    (64, 2, 160, "8 training images, so that an epoch holds at least 4 steps; a step of 2 images at 256 px peaked "
                 "at 1.00 GiB, with 64.00 GiB free"),
    (0.4, 2, 128, "8 training images, so that an epoch holds at least 4 steps; a step of 2 images at 256 px peaked "
                  "at 1.00 GiB, with 0.40 GiB free"),
    (0.3, 1, 160, "a step of 2 images at 128 px would take about 0.25 GiB, more than 80 % of the 0.30 GiB free (a "
                  "step of 2 at 256 px peaked at 1.00 GiB)"),
    (0.1, 1, 128, "a step of 2 images at 128 px would take about 0.25 GiB, more than 80 % of the 0.10 GiB free (a "
                  "step of 2 at 256 px peaked at 1.00 GiB); even one image would take about 0.12 GiB: the run may "
                  "run out of memory (close other programs, or plan on a machine with more)")])
def test_plan_fits_the_batch_and_size_to_the_free_memory(tmp_path, monkeypatch, free_gib, batch, size, why):
    # The probe's step (2 images at 256 px) peaks at 1 GiB; the plan scales it by pixels and
    # images, and uses 80 % of what is free. With 64 GiB the budget's 2,200 steps cap the size at
    # 160 (as in the test above); with 0.4 GiB 2 images fit up to 128 px (0.25 GiB); with 0.3 GiB
    # not even there: one image a step, whose time the plan takes as half the probe's, fits up to
    # 160 px (0.2 GiB), which the budget holds; with 0.1 GiB not even one image at 128 px fits.
    import segan.plan
    monkeypatch.setattr(segan.plan, "available_memory", lambda device: free_gib * 2 ** 30)
    probed = []

    def timer(config: Config) -> Probe:
        probed.append((config.train.batch_size, config.data.size))
        return dataclasses.replace(fake_timer(config), memory=2 ** 30)

    root = dataset(tmp_path / "data", disks)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}}), "15m", timer=timer)
    assert (plan.config.train.batch_size, plan.config.data.size) == (batch, size) and probed == [(2, 256)]
    assert f"train.batch_size {batch}: {why}" in plan.reasons
    if batch == 1:  # timed per image as measured
        assert plan.step_seconds == pytest.approx(1e-5 * size ** 2 / 2)
    if free_gib < 1:
        assert f"sizes above {size} px left out: a step of batch {batch} would take more than 80 % of the " \
               f"{free_gib:.2f} GiB free" in plan.reasons
    else:
        assert not any(reason.startswith("sizes above") for reason in plan.reasons)


@pytest.mark.parametrize("base_batch, why", [
    (8, "kept from the base config; batches of 4 scored lower on Kvasir-SEG in 30 minutes "
        "(docs/benchmarks/plan.md#kvasir-seg-levers-tried)"),
    (6, "kept from the base config")])
def test_plan_keeps_the_base_batch_of_a_large_enough_set_and_says_so(tmp_path, base_batch, why):
    root = dataset(tmp_path / "data", disks, n_train=32)  # 32 images: an epoch of 4 steps at any batch up to 8
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}, "train": {"batch_size": base_batch}}), "10m",
                     timer=fake_timer)  # its Probe measures no memory: the reason leaves memory out
    assert plan.config.train.batch_size == base_batch and f"train.batch_size {base_batch}: {why}" in plan.reasons


def test_plan_names_rare_classes_and_keeps_the_base_settings(tmp_path):
    root = dataset(tmp_path / "data", imbalanced)
    base = Config.from_dict({"data": {"root": str(root), "classes": ["background", "large", "rare"],
                                      "rotations": False}, "loss": {"terms": {"ce": 1.0, "lovasz": 1.0}}})
    plan = make_plan(base, "10m", timer=fake_timer)
    assert plan.config.data.rotations is False and plan.config.loss.terms == {"ce": 1.0, "lovasz": 1.0}
    assert any("rare classes" in reason and "rare" in reason.split(":")[1] and "large" not in reason.split(":")[1]
               for reason in plan.reasons)


@pytest.mark.parametrize("generator, width", [({"arch": "UNet"}, 128), ({"decoder_width": 64}, 64),
                                               ({"arch": "fpn"}, 256), ({"arch": "unetplusplus"}, 256)])
def test_plan_halves_only_the_default_unet_decoder(tmp_path, generator, width):
    root = dataset(tmp_path / "data", disks)
    plan = make_plan(Config.from_dict({"data": {"root": str(root)}, "generator": generator}), "10m", timer=fake_timer)
    assert plan.config.data.resize == "resize" and plan.config.generator.decoder_width == width
    assert any(reason.startswith("generator.decoder_width") for reason in plan.reasons) == (width == 128)
    Config.from_dict(plan.config.to_dict())  # what plan.yaml holds loads


def test_plan_keeps_the_adversarial_term_only_where_the_discriminator_judges_unlabelled_images(tmp_path):
    root = dataset(tmp_path / "data", disks)
    write(tmp_path / "unlabelled" / "0.png", np.zeros((SIDE, SIDE, 3), np.uint8))
    timed = []

    def timer(config: Config) -> Probe:
        timed.append(config.loss.adv_weight)  # the step the plan sizes the run by
        return fake_timer(config)

    def plan_of(**sections):
        plan = make_plan(merge(labelled, sections), "10m", timer=timer)
        reason = next((reason for reason in plan.reasons if reason.startswith("loss.adv_weight")), None)
        return plan.config.loss.adv_weight, reason

    labelled = Config.from_dict({"data": {"root": str(root)}, "loss": {"adv_weight": 0.05}})
    weight, reason = plan_of()
    assert weight == 0.0 and timed == [0.0]
    assert reason.startswith("loss.adv_weight 0 (not 0.05): every training image is labelled;")
    assert reason.endswith("with the discriminator (--unlabeled), give it back (--adv-weight 0.05)")
    unlabelled = {"unlabeled": [str(tmp_path / "unlabelled")]}
    for data, mode in ((unlabelled, "adversarial+self-training"), ({"labeled_fraction": 0.5}, "adversarial"),
                       (unlabelled, "adversarial")):
        assert plan_of(data=data, semi={"mode": mode}) == (0.05, None)
    for mode, why in (("self-training", "learns from the unlabelled images without the discriminator"),
                      ("none", "leaves the unlabelled images unused")):
        weight, reason = plan_of(data={"labeled_fraction": 0.5}, semi={"mode": mode})
        assert weight == 0.0 and reason.startswith(f"loss.adv_weight 0 (not 0.05): semi.mode {mode} {why};")
        assert reason.endswith("set --semi adversarial+self-training and give it back (--adv-weight 0.05)")
    assert timed == [0.0, 0.05, 0.05, 0.05, 0.0, 0.0]


def test_plan_turns_drawn_pairs_off_and_says_why_to_a_small_labelled_set(tmp_path):
    root = dataset(tmp_path / "data", disks)  # 8 labelled training images

    def synthesis_reasons(**data):
        plan = make_plan(Config.from_dict({"data": {"root": str(root), **data}}), "10m", timer=fake_timer)
        return plan.config.data.synthetic, [reason for reason in plan.reasons if "segan synth" in reason]

    found = ("drawn pairs (segan synth) showed no reliable gain over the labelled images alone at equal time, and "
             "added to unlabelled images they lowered what those gained (docs/benchmarks/synth.md)")
    assert synthesis_reasons(synthetic="pairs") == (None, [
        f"data.synthetic off (not pairs): {found}; to train with them anyway, give segan train --synthetic pairs"])
    assert synthesis_reasons() == (None, [
        f"8 labelled images and no unlabelled ones: {found}, while unlabelled images of the same kind gained on every "
        "split with 25 Kvasir-SEG labels (--unlabeled, with the adversarial term: docs/how-to/unlabelled-images.md)"])
    assert synthesis_reasons(labeled_fraction=0.5) == (None, [])  # unlabelled images: the semi rules speak


def test_plan_command_writes_a_config_that_trains(tmp_path, monkeypatch, capsys):
    import segan.plan
    monkeypatch.setattr(segan.plan, "measure_step", fake_timer)
    root = dataset(tmp_path / "data", disks, n_train=4)
    out = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--time-budget", "5m", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "settings chosen:" in printed and "object_width_px" in printed
    summary = json.loads(printed.strip().splitlines()[-1])
    loaded = Config.load(out)  # the reasons are YAML comments
    assert out.read_text().startswith("# written by segan plan")
    assert (loaded.data.size, loaded.train.time_budget, loaded.loss.adv_weight) == (summary["size"], "5m", 0.0)
    before = out.read_text()
    assert main(["plan", str(root), "--out", str(out)]) == 2  # an existing plan is kept
    assert "plan.yaml exists; nothing was changed" in capsys.readouterr().err and out.read_text() == before
    # The plan trains (on the tiny test model and one epoch rather than its budget: no timing here).
    from segan.training import train
    tiny = tiny_config(root, tmp_path / "run")
    config = merge(loaded, {"generator": tiny.to_dict()["generator"],
                            "train": {**tiny.to_dict()["train"], "time_budget": None},
                            "data": {"size": 64, "num_workers": 0}})
    result = train(config)
    assert result.epochs == 1 and (tmp_path / "run" / "generator" / "model.safetensors").is_file()


def test_the_step_probe_runs_training_steps_on_the_training_batches(tmp_path, monkeypatch, caplog):
    from segan.plan import measure_step
    from segan.training import LastCheckpoint, SeganModule
    root = dataset(tmp_path / "data", disks, n_train=4, n_val=6)
    shapes = []
    training_step = SeganModule.training_step

    def counted(self, batch, batch_idx):
        shapes.append(tuple(batch["image"].shape))
        return training_step(self, batch, batch_idx)

    validated, saved = [], []
    validation_step = SeganModule.validation_step

    def counted_validation(self, batch, batch_idx):
        validated.append(tuple(batch["image"].shape))
        return validation_step(self, batch, batch_idx)

    logged = []
    log = SeganModule.log

    def recorded(self, name, *args, **kwargs):
        logged.append(name)
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(SeganModule, "log", recorded)
    monkeypatch.setattr(SeganModule, "training_step", counted)
    monkeypatch.setattr(SeganModule, "validation_step", counted_validation)
    monkeypatch.setattr(LastCheckpoint, "on_train_epoch_end", lambda self, trainer, module: saved.append(self.path))
    # Class weights named by a method are counted from the masks by train(), not by the probe.
    config = tiny_config(root, tmp_path / "run", loss={"class_weights": "median-frequency", "adv_warmup_epochs": 2})
    with caplog.at_level(logging.INFO):
        measured = measure_step(config, steps=3, warmup=2, validation_batches=1)
    assert shapes == [(4, 3, 64, 64)] * 5  # 2 to warm up, 3 timed: 4 images, one batch a pass
    # the run's usual step, past its adversarial warm-up: the generator also learns to fool D
    assert logged.count("train/adv_loss") == 5
    assert validated == [(4, 3, 64, 64), (2, 3, 64, 64)]  # one to warm up, one timed: 6 images in 4s
    assert len(saved) == 1 and saved[0].name == "last.ckpt"  # the run's own epoch end, in a scratch folder
    assert min(measured.step_s, measured.validation_image_s, measured.epoch_end_s) > 0
    assert not (tmp_path / "run").exists()  # a probe writes no run
    # segan plan prints the plan, not the probe trainer's lines (devices, precision, a tip)
    assert [record.getMessage() for record in caplog.records if record.name.startswith("lightning")] == []
