"""What the machine can do: native bf16, and the precision `auto` resolves to."""

import torch

from segan import hardware


def test_kernels_held_to_avx2_have_no_native_bf16(monkeypatch):
    # ATEN_CPU_CAPABILITY=avx2 on a CPU with AVX-512 BF16: torch's kernels are AVX2 ones, so bf16
    # would be emulated; auto must choose float32 there, as on an AVX2-only CPU.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not hardware.cpu_has_bf16()
    assert hardware.resolve_training_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert hardware.cpu_has_bf16()
    assert hardware.resolve_training_precision("auto", "cpu") == "bf16-mixed"


def test_onednn_held_below_bf16_has_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert not hardware.cpu_has_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert hardware.cpu_has_bf16()
