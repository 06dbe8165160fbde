import pytest
import torch
from safetensors.torch import save_file

from segan.config import GeneratorConfig
from segan.models import build_generator, labels, one_hot, output_channels, probabilities


@pytest.mark.parametrize("arch", ["unet", "fpn", "deeplabv3plus"])
@pytest.mark.parametrize("in_channels, num_classes", [(1, 2), (3, 5)])
def test_any_architecture_channels_and_classes(arch, in_channels, num_classes):
    model = build_generator(GeneratorConfig(arch=arch, encoder_name="resnet18"), in_channels, num_classes).eval()
    out = model(torch.randn(1, in_channels, 64, 64))
    assert out.shape == (1, output_channels(num_classes), 64, 64)


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_unet_encoder_depth(depth):
    model = build_generator(GeneratorConfig(encoder_depth=depth), 3, 2).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("width, depth, blocks", [(256, 5, [256, 128, 64, 32, 16]), (128, 5, [128, 64, 32, 16, 8]),
                                                  (256, 3, [64, 32, 16]), (128, 3, [32, 16, 8])])
def test_decoder_width_halves_block_by_block(width, depth, blocks):
    model = build_generator(GeneratorConfig(decoder_width=width, encoder_depth=depth), 3, 2).eval()
    assert [block.conv2[0].out_channels for block in model.decoder.blocks] == blocks
    assert model.segmentation_head[0].in_channels == blocks[-1]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("arch", ["UNet", "unetplusplus", "manet"])
def test_decoder_width_reaches_each_per_stage_decoder(arch):
    model = build_generator(GeneratorConfig(arch=arch, decoder_width=64), 3, 2).eval()
    assert model.segmentation_head[0].in_channels == 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_a_narrower_decoder_has_fewer_parameters():
    def count(width: int) -> int:
        return sum(p.numel() for p in build_generator(GeneratorConfig(decoder_width=width), 3, 2).decoder.parameters())
    # a convolution's weights go with in x out channels; the skips' channels are the encoder's
    assert count(128) < count(256) / 2


def test_decoder_width_is_refused_where_the_decoder_has_no_blocks_per_stage():
    from segan.config import Config, ConfigError
    with pytest.raises(ValueError, match="decoder_width applies to .* not to 'FPN'"):
        build_generator(GeneratorConfig(arch="FPN", decoder_width=128), 3, 2)
    build_generator(GeneratorConfig(arch="fpn"), 3, 2)  # the default width is not a choice
    # a config file says so on loading, before any data is read
    with pytest.raises(ConfigError) as caught:
        Config.from_dict({"generator": {"arch": "fpn", "decoder_width": 128}})
    assert caught.value.problems == [
        "generator.decoder_width: applies to the decoders with one block per encoder stage (unet, unetplusplus, "
        "manet), not to 'fpn'; leave it at 256 or choose one of those"]
    config = Config.from_dict({"generator": {"arch": "unetplusplus", "decoder_width": 128}})
    assert config.generator.decoder_width == 128


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture 'unett'"):
        build_generator(GeneratorConfig(arch="unett"), 3, 2)
    with pytest.raises(ValueError, match="unknown encoder 'resnet9000'"):
        build_generator(GeneratorConfig(encoder_name="resnet9000"), 3, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_encoder_weights_load_with_checks(tmp_path, suffix):
    torch.manual_seed(3)
    donor = build_generator(GeneratorConfig(), 3, 2)
    path = tmp_path / f"encoder{suffix}"
    state = {k: v.contiguous() for k, v in donor.encoder.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = build_generator(GeneratorConfig(encoder_weights=str(path)), 3, 2)
    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    # the model is built without weights, so its exported config never asks for a download
    assert model.config["encoder_weights"] is None


def test_mismatched_encoder_weights_are_refused(tmp_path):
    other = build_generator(GeneratorConfig(encoder_name="resnet34"), 3, 2)
    path = tmp_path / "resnet34.safetensors"
    save_file({k: v.contiguous() for k, v in other.encoder.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"do not fit the encoder: 0 missing .* \d+ unexpected"):
        build_generator(GeneratorConfig(encoder_weights=str(path)), 3, 2)


def test_probabilities_labels_and_one_hot():
    binary = torch.tensor([[[[-1.0, 2.0]]]])
    assert labels(binary).tolist() == [[[0, 1]]]
    assert torch.allclose(probabilities(binary), torch.sigmoid(binary))
    multi = torch.tensor([[[[1.0]], [[3.0]], [[2.0]]]])
    assert labels(multi).tolist() == [[[1]]]
    assert torch.allclose(probabilities(multi).sum(1), torch.ones(1, 1, 1))
    mask = torch.tensor([[[0, 2, 255]]])
    assert one_hot(mask, 3)[0, :, 0].tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert one_hot(torch.tensor([[[0, 1, 255]]]), 1).tolist() == [[[[0.0, 1.0, 0.0]]]]


def test_a_narrower_decoder_reloads_from_its_exported_files(tmp_path):
    # `segan predict` rebuilds the network from smp's config.json, not from segan's config
    import segmentation_models_pytorch as smp
    model = build_generator(GeneratorConfig(decoder_width=128), 3, 2).eval()
    model.save_pretrained(str(tmp_path))
    reloaded = smp.from_pretrained(str(tmp_path)).eval()
    image = torch.randn(1, 3, 64, 64)
    assert reloaded.segmentation_head[0].in_channels == 8
    assert torch.equal(reloaded(image), model(image))
