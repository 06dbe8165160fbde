"""The G/D step, adv_weight 0, resume, export, DDP."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import lightning as L
import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch.utils.data import DataLoader

import segan.training as training
from segan.training import SeganModule, device_count, train

from conftest import tiny_config



def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def one_batch(size: int = 64, binary: bool = True) -> dict:
    torch.manual_seed(1)
    mask = torch.zeros(4, size, size, dtype=torch.long)
    mask[:, 16:40, 20:50] = 1
    return dict(image=torch.randn(4, 3, size, size), mask=mask, name=[str(i) for i in range(4)])


def fit_one_step(module: L.LightningModule, batch: dict, callbacks=()) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks))
    trainer.fit(module, DataLoader([batch], batch_size=None))


class StepProbe(SeganModule):
    """Snapshots the parameters between the D step and the G step."""

    def on_train_batch_start(self, batch, batch_idx):
        self.snapshots = [(params(self.generator), params(self.discriminator))]

    def toggled_optimizer(self, optimizer):
        if optimizer is self.optimizers()[0]:  # about to take the G step: D's step is done
            self.snapshots.append((params(self.generator), params(self.discriminator)))
        return super().toggled_optimizer(optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.snapshots.append((params(self.generator), params(self.discriminator)))


def test_d_step_changes_only_d_and_g_step_only_g(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path, loss={"adv_weight": 0.5, "adv_warmup_epochs": 0})
    module = StepProbe(config.to_dict())
    fit_one_step(module, one_batch())
    (g0, d0), (g1, d1), (g2, d2) = module.snapshots
    assert changed(g0, g1) == set(), "the D step moved generator parameters"
    assert changed(d0, d1) == set(d0), "the D step left some discriminator parameters unchanged"
    assert changed(d1, d2) == set(), "the G step moved discriminator parameters"
    trained = {name for name, p in module.generator.named_parameters() if p.grad is not None}
    assert trained and changed(g1, g2) == trained, "the G step did not move exactly the generator's trained parameters"


def test_adversarial_term_reaches_generator_after_warmup(tmp_path, demo_root):
    """Same start, same batch: with the adversarial term the G update differs from without it."""
    batch = one_batch()
    updates = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        module = SeganModule(tiny_config(demo_root, tmp_path, loss={"adv_weight": weight}).to_dict())
        fit_one_step(module, batch)
        updates.append(params(module.generator))
    assert changed(updates[0], updates[1])


def test_adv_weight_zero_is_a_plain_supervised_step(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path, loss={"adv_weight": 0.0})
    torch.manual_seed(0)
    module = SeganModule(config.to_dict())
    plain = copy.deepcopy(module.generator)
    batch = one_batch()
    fit_one_step(module, batch)

    # The textbook supervised step, written independently: smp Dice + BCE, Adam.
    optimizer = torch.optim.Adam(plain.parameters(), lr=config.train.lr)
    plain.train()
    logits = plain(batch["image"])
    target = batch["mask"].float().unsqueeze(1)
    loss = DiceLoss(mode="binary", from_logits=True)(logits, batch["mask"]) + \
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, expected in plain.named_parameters():
        torch.testing.assert_close(dict(module.generator.named_parameters())[name], expected, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.parametrize("sections", [
    {"loss": {"adv_weight": 0.0}},
    {"loss": {"adv_weight": 0.1}},
    {"data": {"labeled_fraction": 0.5}, "semi": {"mode": "adversarial+self-training", "gate_warmup_epochs": 0}},
], ids=["plain", "gan", "gan+unlabelled"])
def test_each_training_step_waits_for_the_device_once(tmp_path, demo_root, monkeypatch, sections):
    """Every read of a tensor's value by the host (item, tolist, bool, float, int) inside a
    training step is counted: each step, plain, GAN, or GAN with unlabelled images, has one."""
    reads: list[int] = []
    counting = {"on": False}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, **kwargs):
            if counting["on"]:
                reads[-1] += 1
            return __original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)

    class Counting(SeganModule):
        def training_step(self, batch, batch_idx):
            reads.append(0)
            counting["on"] = True
            try:
                return super().training_step(batch, batch_idx)
            finally:
                counting["on"] = False

    monkeypatch.setattr(training, "SeganModule", Counting)
    result = train(tiny_config(demo_root, tmp_path / "run", train={"epochs": 2, "batch_size": 2}, **sections))
    assert result.nonfinite_batches_skipped == 0
    assert len(reads) == result.steps > 2
    assert reads == [1] * result.steps


def test_resume_continues_steps_and_optimizer_state(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path / "run", train={"epochs": 2})
    first = train(config)
    assert first.epochs == 2
    steps_per_epoch = first.steps // 2
    longer = copy.deepcopy(config)
    longer.train.epochs = 3
    resumed = train(longer, resume=True)
    assert resumed.steps == 3 * steps_per_epoch
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 3 * steps_per_epoch  # Lightning counts G and D optimizer steps
    # Adam's step counters only reach 3 epochs' worth if the saved optimiser state was restored.
    for optimizer_state in last["optimizer_states"]:
        first_param = optimizer_state["state"][0]
        assert int(first_param["step"]) == 3 * steps_per_epoch
    # the history of both sessions survives in RUN/metrics.csv
    import csv
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    validated = sorted({int(r["epoch"]) for r in rows if r.get("val/iou")})
    assert validated[:3] == [0, 1, 2]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, demo_root):
    from segan.training import ResumeError
    with pytest.raises(ResumeError, match=r"cannot resume: .*nothing/checkpoints/last.ckpt does not exist"):
        train(tiny_config(demo_root, tmp_path / "nothing"), resume=True)
    assert not (tmp_path / "nothing").exists()


def test_run_folder_and_exported_generator_reload_in_plain_smp(tmp_path, demo_root):
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run))
    for part in ("config.yaml", "summary.json", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "generator/config.json", "generator/model.safetensors", "tensorboard"):
        assert (run / part).exists(), part
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_iou"] == result.best_val_iou
    import csv
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert float(rows[-1]["best/iou"]) == pytest.approx(result.best_val_iou, abs=1e-4)  # the re-scored best
    assert all(not row.get("best/iou") for row in rows[:-1])
    exported = json.loads((run / "generator" / "config.json").read_text())
    assert exported["encoder_weights"] is None

    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    module = SeganModule(best["hyper_parameters"]["config"])
    module.load_state_dict(best["state_dict"])
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        # the layout smp builds (training runs NHWC), so both run the same kernels bit for bit
        expected = module.generator.eval().to(memory_format=torch.contiguous_format)(image)
    torch.save(image, tmp_path / "input.pt")
    script = (
        "import sys, torch, segmentation_models_pytorch as smp\n"
        f"model = smp.from_pretrained(r'{run / 'generator'}').eval()\n"
        f"x = torch.load(r'{tmp_path / 'input.pt'}', weights_only=True)\n"
        "with torch.inference_mode():\n"
        f"    torch.save(model(x), r'{tmp_path / 'output.pt'}')\n"
        "assert not any(m == 'segan' or m.startswith('segan.') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "output.pt", weights_only=True), expected, rtol=0, atol=0)


def test_device_count_reads_every_form_train_devices_takes():
    """A count, a list of indices (which used to crash build_trainer) or auto: DDP from two on."""
    assert [device_count(devices) for devices in (1, 2, "2", [0, 1], [3], "auto", None)] == [1, 2, 2, 2, 1, None,
                                                                                          None]


@pytest.mark.parametrize("classes", [["bg", "fg"], ["a", "b", "c"]])
def test_input_guards_hide_exact_truth_values(tmp_path, demo_root, classes):
    mask = torch.tensor([[[0, 1], [255, 1]]]) if len(classes) == 2 else torch.tensor([[[0, 2], [255, 1]]])
    channels = 1 if len(classes) == 2 else 3
    fake = torch.rand(1, channels, 2, 2)
    smooth = SeganModule(tiny_config(demo_root, tmp_path, data={"classes": classes},
                                     discriminator={"input_guard": "smooth", "guard_strength": 0.2}).to_dict())
    real = smooth.real_mask(mask, fake)
    kept = (mask != 255).unsqueeze(1).expand_as(real)
    assert real[kept].min() > 0.0 and real[kept].max() < 1.0  # no exact 0/1 left
    top = 1 - 0.2 + 0.2 * (0.5 if channels == 1 else 1 / 3)
    assert real[kept].max().item() == pytest.approx(top)
    assert torch.equal(real[~kept], fake[~kept])  # ignored pixels carry the prediction itself
    none = SeganModule(tiny_config(demo_root, tmp_path, data={"classes": classes},
                                   discriminator={"input_guard": "none"}).to_dict())
    assert set(none.real_mask(mask, fake)[kept].unique().tolist()) <= {0.0, 1.0}
    noise = SeganModule(tiny_config(demo_root, tmp_path, data={"classes": classes},
                                    discriminator={"input_guard": "noise", "guard_strength": 0.1}).to_dict())
    assert not torch.equal(noise.guarded(fake), fake)  # both sides get noise before D sees them
    assert torch.equal(none.guarded(fake), fake)


def test_greyscale_multiclass_run_records_its_normalisation(tmp_path, demo_root):
    """1 input channel and 3 classes (the demo's 0/1 masks are valid class indices; class 2 never occurs)."""
    import numpy as np
    import yaml
    from segan import metrics
    from segan.config import Config
    from segan.data import MaskEncoding, read_image, read_mask
    config = tiny_config(demo_root, tmp_path / "run", data={"in_channels": 1, "classes": ["bg", "shape", "other"]})
    result = train(config)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert len(saved["mean"]) == len(saved["std"]) == 1
    model = smp.from_pretrained(str(tmp_path / "run" / "generator")).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)

    # The reported scores, recomputed from the exported (best) generator on the validation images:
    # 64 x 64 demo images at size 64 need no resize or padding, so this is the model's own view.
    data = Config.load(tmp_path / "run" / "config.yaml").data
    mean, std = (np.asarray(v, np.float32) * 255 for v in data.normalization())
    confusion = torch.zeros(3, 3, dtype=torch.long)
    images = sorted((demo_root / "validation" / "images").glob("*.png"))
    assert len(images) == 4
    for path in images:
        x = (read_image(path, 1).astype(np.float32) - mean) / std
        with torch.no_grad():
            predicted = model(torch.from_numpy(x.transpose(2, 0, 1))[None]).argmax(dim=1)
        truth = torch.from_numpy(read_mask(demo_root / "validation" / "masks" / path.name,
                                           MaskEncoding.from_config(data)))[None]
        confusion += metrics.confusion_matrix(predicted, truth, 3, data.ignore_index)[0]
    scores = metrics.summary(confusion, binary=False)
    # Lightning logs float32; the summary rounds to 4 decimals.
    assert result.best_val_iou == round(float(np.float32(scores["iou"])), 4)
    assert result.best_val_dice == round(float(np.float32(scores["dice"])), 4)


def test_mismatched_normalisation_is_refused_before_training(tmp_path, demo_root):
    config = tiny_config(demo_root, tmp_path / "run", data={"in_channels": 1})
    config.data.mean = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="one per input channel"):
        train(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_warmup_generator_updates_equal_the_plain_run(tmp_path, demo_root):
    """During the warm-up the discriminator trains but must not touch the generator's updates."""
    results = []
    for weight in (0.0, 0.5):
        config = tiny_config(demo_root, tmp_path / f"w{weight}", loss={"adv_weight": weight, "adv_warmup_epochs": 5},
                             data={"augment": "none"}, train={"epochs": 1})
        L.seed_everything(0)
        module = SeganModule(config.to_dict())
        train_loader, _ = __import__("segan.training", fromlist=["build_dataloaders"]).build_dataloaders(config)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_val_batches=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        L.seed_everything(0)
        trainer.fit(module, train_loader)
        results.append(params(module.generator))
    assert changed(results[0], results[1]) == set()


def test_last_checkpoint_holds_the_epochs_best_score(demo_root, tmp_path):
    # last.ckpt is written after BestCheckpoint has scored the epoch: a resumed run then compares
    # with the true best (it used to hold the previous epoch's, so a later, worse epoch could
    # replace a best.ckpt written in the epoch before the interruption).
    import csv
    run = tmp_path / "run"
    train(tiny_config(demo_root, run, train={"epochs": 1}))  # its one epoch is its best
    with (run / "metrics.csv").open(newline="") as handle:
        scores = [float(row["val/iou"]) for row in csv.DictReader(handle) if row.get("val/iou")]
    saved = training.load_checkpoint(run / "checkpoints" / "last.ckpt")["callbacks"]
    best = next(state for key, state in saved.items() if key.startswith("BestCheckpoint"))
    assert best["best_model_score"] is not None and float(best["best_model_score"]) == pytest.approx(scores[0], abs=1e-6)


def test_min_epoch_steps_makes_an_epoch_several_passes(tmp_path, demo_root):
    # 12 training images in batches of 4: 3 steps a pass, 7 steps an epoch (2.33 passes).
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run, train={"epochs": 2, "min_epoch_steps": 7}))
    assert (result.epochs, result.steps) == (2, 14)
    import csv
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert sorted(int(row["epoch"]) for row in rows if row.get("val/iou")) == [0, 1]  # once an epoch



def test_validate_every_validates_the_first_every_nth_and_the_last_epoch(tmp_path, demo_root, monkeypatch):
    import csv
    from segan.training import BestCheckpoint
    considered = []  # the epochs whose score the best checkpoint weighed
    weigh = BestCheckpoint._save_topk_checkpoint

    def spied(self, trainer, *args):
        considered.append(trainer.current_epoch)
        return weigh(self, trainer, *args)
    monkeypatch.setattr(BestCheckpoint, "_save_topk_checkpoint", spied)
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run, loss={"adv_weight": 0.0}, train={"epochs": 6, "validate_every": 4}))
    with (run / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = {int(row["epoch"]): float(row["val/iou"]) for row in rows if row.get("val/iou")}
    assert sorted(scores) == [0, 4, 5]
    # an epoch between two validations is never weighed with the last validation's score
    assert considered == [0, 4, 5]
    best = training.load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert best["epoch"] == max(scores, key=lambda epoch: (scores[epoch], -epoch))
    assert result.best_val_iou == pytest.approx(max(scores.values()), abs=1e-4)


def test_a_run_resumed_inside_an_epoch_keeps_the_validation_cadence(tmp_path, demo_root, monkeypatch):
    # Ctrl-C inside epoch 2, which validate_every 4 does not validate: the resumed run does not
    # validate it either (Lightning does not start a resumed epoch again).
    import csv
    from segan.cli import main
    run = tmp_path / "run"
    tiny_config(demo_root, run, loss={"adv_weight": 0.0}, train={"epochs": 6, "validate_every": 4}).save(
        tmp_path / "config.yaml")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.trainer.fit_loop.epoch_loop.batch_progress.total.processed == 7:  # 3 steps an epoch
            raise KeyboardInterrupt
    with monkeypatch.context() as patched:
        patched.setattr(SeganModule, "on_train_batch_end", on_train_batch_end, raising=False)
        assert main(["train", "--config", str(tmp_path / "config.yaml")]) == 130
    assert main(["train", "--resume", "--out", str(run)]) == 0
    with (run / "metrics.csv").open(newline="") as handle:
        assert sorted(int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val/iou")) == [0, 4, 5]
