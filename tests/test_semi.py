"""Semi-supervised training: the unlabelled stream, its views, pseudo-labels and the three modes."""

import json
import logging

import cv2
import pytest
import torch

from segan.config import ConfigError, Config
from segan.checkpointing import load_checkpoint
from segan.data import make_demo_dataset
from segan.semi import cutmix, find_unlabeled, pseudo_label_loss, pseudo_labels, split_labeled
from segan.data.pairs import find_splits
from segan.training import train

from conftest import tiny_config, write

MODES = ["self-training", "adversarial", "adversarial+self-training"]


@pytest.fixture(scope="module")
def semi_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("semi")
    data = make_demo_dataset(root / "data", n_train=8, n_val=2, size=64, seed=3)
    extra = make_demo_dataset(root / "extra", n_train=4, n_val=1, size=64, seed=4)
    return data, extra / "train" / "images"


def semi_config(data, out, mode, **semi):
    return tiny_config(data, out, data={"labeled_fraction": 0.5}, semi={"mode": mode, **semi},
                       train={"epochs": 2, "batch_size": 2})


def weights(run):
    return {k: v for k, v in load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"].items()
            if k.startswith(("generator.", "teacher."))}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_resumes_and_reports_its_pseudo_labels(tmp_path, semi_root, mode):
    """Two epochs straight equal one epoch then `--resume --epochs 2` (the schedule of the new
    end is the straight run's), and summary.json carries the unlabelled figures."""
    data, extra = semi_root
    # the combined mode takes its pseudo-labels from a mean teacher, which resumes with the run
    teacher = {"teacher_decay": 0.9, "confidence": 0.5} if mode == "adversarial+self-training" else {}
    # d_confidence 0: once its gate opens D passes every pixel, so the second epoch always has
    # pseudo-labels to measure (whether a 2-step D rates them above 0.2 is not this test's question)
    settings = dict(gate_warmup_epochs=1, d_confidence=0.0, **teacher)
    straight = train(semi_config(data, tmp_path / "straight", mode, **settings))
    short = semi_config(data, tmp_path / "resumed", mode, **settings)
    short.train.epochs = 1
    train(short)
    short.train.epochs = 2
    resumed = train(short, resume=True)
    assert resumed.steps == straight.steps == 2 * 2  # 4 labelled images, batch 2
    expected, got = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert any(name.startswith("teacher.") for name in expected) == bool(teacher)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["semi"] == straight.semi
    expected_keys = {"unlabeled_loss", "pseudo_share", "pseudo_precision", "d_loss_labeled"}
    if mode.startswith("adversarial"):
        expected_keys.add("d_loss_unlabeled")
    assert set(straight.semi) == expected_keys


def test_thresholds_decide_the_pseudo_label_share(tmp_path, semi_root):
    data, _ = semi_root
    everything = train(semi_config(data, tmp_path / "all", "self-training", confidence=0.0))
    assert everything.semi["pseudo_share"] == 1.0
    shut = train(semi_config(data, tmp_path / "shut", "adversarial", gate_warmup_epochs=5))
    assert shut.semi["pseudo_share"] == 0.0  # the discriminator's gate is not open yet


def test_hidden_masks_never_reach_the_loss(tmp_path, semi_root):
    """The masks that --labeled-fraction hides are only measured: inverting them changes the
    reported pseudo-label precision and not one weight."""
    import shutil
    data, _ = semi_root
    flipped = tmp_path / "flipped"
    shutil.copytree(data, flipped)
    labeled, hidden = split_labeled(find_splits(tiny_config(flipped, tmp_path).data)["train"], 0.5, 0)
    for item in hidden:
        mask = cv2.imread(str(item.hidden_mask), cv2.IMREAD_GRAYSCALE)
        write(item.hidden_mask, 255 - mask)
    a = train(semi_config(data, tmp_path / "a", "self-training", confidence=0.0))
    b = train(semi_config(flipped, tmp_path / "b", "self-training", confidence=0.0))
    # the same pseudo-labels, scored against inverted truth: every right pixel becomes wrong
    assert a.semi["pseudo_precision"] == pytest.approx(1 - b.semi["pseudo_precision"], abs=2e-4)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[name], wb[name]) for name in wa)


def test_unlabeled_folders_are_read_like_predict_inputs_and_a_bad_image_is_skipped(tmp_path, semi_root, caplog):
    data, extra = semi_root
    folder = tmp_path / "unlabeled"
    for path in sorted(extra.iterdir()):
        folder.mkdir(exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes((folder / "0000.png").read_bytes())
    listed = tmp_path / "list.txt"
    listed.write_text("elsewhere/x.png\n# a comment\n")  # relative to the list's folder
    with caplog.at_level(logging.WARNING):
        items = find_unlabeled([str(folder), str(listed)])
    assert sorted(item.image.name for item in items) == ["0000.png", "0001.png", "0002.png", "0003.png", "x.png"]
    assert "broken.png" in caplog.text and "left out" in caplog.text
    config = tiny_config(data, tmp_path / "run", data={"unlabeled": [str(folder)]}, semi={"mode": "self-training"},
                         train={"epochs": 1, "batch_size": 2})
    result = train(config)
    assert "pseudo_precision" not in result.semi  # no hidden masks to measure against


def test_labeled_fraction_is_reproducible_and_leaves_at_least_one(tmp_path, semi_root):
    data, _ = semi_root
    pairs = find_splits(tiny_config(data, tmp_path).data)["train"]
    first, hidden = split_labeled(pairs, 0.25, seed=7)
    again, _ = split_labeled(pairs, 0.25, seed=7)
    other, _ = split_labeled(pairs, 0.25, seed=8)
    assert first == again and len(first) == round(len(pairs) * 0.25) and len(hidden) == len(pairs) - len(first)
    assert first != other
    assert {p.image for p in first}.isdisjoint({item.image for item in hidden})
    assert len(split_labeled(pairs, 0.01, seed=0)[0]) == 1


def test_cutmix_moves_the_same_box_in_images_and_targets():
    torch.manual_seed(0)
    images = torch.stack([torch.full((1, 16, 16), float(i)) for i in range(3)])
    labels = torch.stack([torch.full((16, 16), i) for i in range(3)])
    mixed, (mixed_labels,) = cutmix(images, [labels], probability=1.0)
    for i in range(3):
        source = (i - 1) % 3  # each image takes its box from the one before it
        pasted = mixed[i, 0] == source
        assert pasted.any() and torch.equal(pasted, mixed_labels[i] == source)
        assert torch.equal(mixed[i, 0][~pasted], torch.full_like(mixed[i, 0][~pasted], float(i)))
    assert torch.equal(images[1, 0], torch.full((16, 16), 1.0))  # the inputs are left as they were


def test_a_mean_teacher_makes_the_pseudo_labels():
    """semi.teacher_decay: the weak view's pseudo-labels are the teacher's (run in eval mode),
    not the generator's; a generator that is never sure passes nothing by itself."""
    from segan.models import build_generator
    from segan.semi import SemiSupervision

    config = Config.from_dict({"generator": {"encoder_name": "resnet18", "encoder_weights": None},
                               "semi": {"mode": "self-training", "confidence": 0.95}})
    generator = build_generator(config.generator, 3, 1)
    torch.nn.init.zeros_(generator.segmentation_head[0].weight)
    torch.nn.init.zeros_(generator.segmentation_head[0].bias)  # every pixel 0.5: never 95% sure

    class SureTeacher(torch.nn.Module):
        def forward(self, image):
            assert not self.training
            return torch.where(image[:, :1] > 0, 10.0, -10.0)  # foreground where the first channel is positive

    teacher = SureTeacher()
    weak = torch.randn(2, 3, 32, 32)
    batch = {"weak": weak, "strong": weak.clone(), "hidden": (weak[:, 0] > 0).long()}
    semi = SemiSupervision(config, discriminate=None, adversarial_loss=None)
    alone = semi.step(generator, batch, gate_open=True)
    taught = semi.step(generator, batch, gate_open=True, teacher=teacher)
    assert alone.stats["pseudo_share"].item() == 0.0 and alone.loss.item() == 0.0
    assert taught.stats["pseudo_share"].item() == 1.0 and teacher.training
    assert taught.precision_counts.tolist() == [2 * 32 * 32, 2 * 32 * 32]  # the teacher's labels, all right
    assert taught.loss.item() > 0


def test_pseudo_labels_and_their_loss():
    probs = torch.tensor([[[[0.9, 0.5, 0.2]]]])
    labels, confidence = pseudo_labels(probs)
    assert labels.tolist() == [[[1, 1, 0]]]
    assert confidence[0, 0].tolist() == pytest.approx([0.9, 0.5, 0.8])
    multi = torch.tensor([[[[0.2]], [[0.7]], [[0.1]]]])
    assert pseudo_labels(multi)[0].tolist() == [[[1]]] and pseudo_labels(multi)[1].item() == pytest.approx(0.7)
    logits = torch.tensor([[[[2.0, -1.0]]]])
    selected = torch.tensor([[[1.0, 0.0]]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(1.0)) / 2
    assert pseudo_label_loss(logits, torch.tensor([[[1, 0]]]), selected).item() == pytest.approx(expected.item())


def test_semi_settings_that_cannot_work_are_named(tmp_path):
    with pytest.raises(ConfigError) as error:
        Config.from_dict({"semi": {"mode": "adversarial"}, "loss": {"adv_weight": 0},
                          "data": {"unlabeled": ["more"]}})
    assert "semi.mode: 'adversarial' needs a trained discriminator, but loss.adv_weight is 0" in str(error.value)
    # the measured best mode is the default; it applies only where there are unlabelled images
    assert Config().semi.mode == "adversarial+self-training"
    assert Config.from_dict({"loss": {"adv_weight": 0}}).semi.mode == "adversarial+self-training"
    with pytest.raises(ConfigError, match=r"or semi.mode self-training \(--semi self-training\)"):
        Config.from_dict({"loss": {"adv_weight": 0}, "data": {"labeled_fraction": 0.5}})
    with pytest.raises(ConfigError, match=r"semi.teacher_decay: semi.mode 'adversarial' makes no pseudo-labels"):
        Config.from_dict({"semi": {"mode": "adversarial", "teacher_decay": 0.99}})
    with pytest.raises(ConfigError, match=r"data.labeled_fraction: expected"):
        Config.from_dict({"data": {"labeled_fraction": 1.5}})


@pytest.mark.heavy(20)
def test_semi_supervised_runs_under_two_process_ddp_and_bf16(tmp_path, semi_root):
    """The unlabelled stream goes through Lightning's DDP sampler wrapping and bf16 autocast like
    the labelled one: 4 labelled images, 1 per device per step, 2 devices: 2 steps per epoch."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    data, _ = semi_root
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "segan", "train", "--data", str(data), "--out", str(run), "--size", "64",
               "--epochs", "1", "--batch-size", "1", "--num-workers", "0", "--accelerator", "cpu", "--devices", "2",
               "--d-channels", "8", "--d-layers", "2", "--warmup-epochs", "0", "--labeled-fraction", "0.5",
               "--semi", "adversarial+self-training", "--precision", "bf16-mixed"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2
    assert set(summary["semi"]) == {"unlabeled_loss", "pseudo_share", "pseudo_precision", "d_loss_labeled",
                                    "d_loss_unlabeled"}
