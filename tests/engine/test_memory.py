"""Memory estimates: placement of weights/KV/compute between GPU and CPU, scaling, and the fits() verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.gguf_info import ModelInfo, inspect_gguf
from app.engine.memory import (
    GPU_CONTEXT_BYTES,
    ModelLoad,
    compute_reserved_bytes,
    compute_working_bytes,
    estimate_load,
    estimate_model,
    kv_cache_bytes,
)
from app.engine.units import format_memory
from tests.engine.test_gguf_info import write_model

MIB = 1024**2
GIB = 1024**3


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    path = tmp_path_factory.mktemp("memory") / "m.gguf"
    return inspect_gguf(write_model(path, n_layer=6, n_embd=32, n_head=4, n_head_kv=2, n_ff=64))


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    path = tmp_path_factory.mktemp("memory") / "tied.gguf"
    return inspect_gguf(write_model(path, n_layer=3, n_embd=32, tied_output=True))


def _bytes(info: ModelInfo, name: str) -> int:
    return sum(t.n_bytes for t in info.tensors if t.name == name)


def _plenty(gpus: int = 1) -> dict[str, int]:
    return {"available_ram": 64 * GIB, "free_vram": 24 * GIB * gpus, "gpu_count": gpus}


def test_more_gpu_layers_move_bytes_from_cpu_to_gpu(model: ModelInfo) -> None:
    estimates = [estimate_load([ModelLoad(model, n, 1024)]) for n in range(model.block_count + 2)]
    for fewer, more in zip(estimates, estimates[1:], strict=False):
        assert more.gpu_bytes > fewer.gpu_bytes
        assert more.cpu_bytes <= fewer.cpu_bytes
    # weights and KV cache strictly move over, layer by layer (the step past block_count moves the output)
    for fewer, more in zip(estimates[: model.block_count], estimates[1 : model.block_count + 1], strict=True):
        a, b = fewer.models[0], more.models[0]
        assert b.weights_gpu > a.weights_gpu and b.weights_cpu < a.weights_cpu
        assert b.kv_gpu > a.kv_gpu
    assert estimates[0].gpu_bytes == 0
    assert estimates[0].models[0].kv_gpu == 0


def test_all_layers_minus_one_means_everything(model: ModelInfo) -> None:
    everything = estimate_model(ModelLoad(model, -1, 1024))
    assert everything == estimate_model(ModelLoad(model, model.block_count + 1, 1024))
    assert everything == estimate_model(ModelLoad(model, 999, 1024))
    assert everything.output_on_gpu and everything.gpu_layers == model.block_count
    # only the input embeddings stay in RAM
    assert everything.weights_cpu == _bytes(model, "token_embd.weight")
    assert everything.kv_cpu == 0
    total = sum(t.n_bytes for t in model.tensors)
    assert everything.weights_gpu == total - everything.weights_cpu


def test_output_layer_needs_more_than_block_count(model: ModelInfo) -> None:
    blocks_only = estimate_model(ModelLoad(model, model.block_count, 1024))
    assert not blocks_only.output_on_gpu
    output = _bytes(model, "output.weight") + _bytes(model, "output_norm.weight")
    assert blocks_only.weights_cpu == _bytes(model, "token_embd.weight") + output


def test_last_layers_are_offloaded_first(model: ModelInfo) -> None:
    one = estimate_model(ModelLoad(model, 1, 1024))
    last = sum(t.n_bytes for t in model.tensors if t.layer == model.block_count - 1)
    assert one.weights_gpu == last


def test_tied_embeddings_are_copied_to_the_gpu(tied_model: ModelInfo) -> None:
    assert not any(t.name == "output.weight" for t in tied_model.tensors)
    est = estimate_model(ModelLoad(tied_model, -1, 512))
    embd = _bytes(tied_model, "token_embd.weight")
    assert est.weights_cpu == embd
    blocks = sum(t.n_bytes for t in tied_model.tensors if t.layer is not None)
    assert est.weights_gpu == blocks + _bytes(tied_model, "output_norm.weight") + embd


def test_kv_cache_formula_and_linearity(model: ModelInfo) -> None:
    # n_ctx x layers x kv heads x (key + value length) x 2 bytes (f16)
    assert kv_cache_bytes(model, 1000) == 1000 * 6 * 2 * (8 + 8) * 2
    for n_ctx in (256, 1024, 4096):
        small = estimate_model(ModelLoad(model, 0, n_ctx))
        double = estimate_model(ModelLoad(model, 0, 2 * n_ctx))
        assert double.kv_cpu == 2 * small.kv_cpu
    assert kv_cache_bytes(model, 1024, "q8_0", "q8_0") == kv_cache_bytes(model, 1024) * 34 // 64
    assert kv_cache_bytes(model, 1024, "q4_0", "f16") == kv_cache_bytes(model, 1024) * (18 / 32 + 2) // 4
    assert kv_cache_bytes(model, 1024, "F32", "f32") == 2 * kv_cache_bytes(model, 1024)


def test_kv_cache_split_follows_layers(model: ModelInfo) -> None:
    est = estimate_model(ModelLoad(model, 2, 2048))
    per_layer = kv_cache_bytes(model, 2048, n_layers=1)
    assert est.kv_gpu == 2 * per_layer and est.kv_cpu == 4 * per_layer


def test_compute_buffers(model: ModelInfo) -> None:
    # logits dominate the reservation for a short context: 4 * n_ubatch * (n_vocab + n_embd + n_ff)
    assert compute_reserved_bytes(model, 32) == 4 * 512 * (320 + 32 + 64)
    # attention scores dominate at long context without flash attention
    assert compute_reserved_bytes(model, 8192) == 4 * 512 * ((4 + 1) * 8192 + 32 + 64)
    assert compute_reserved_bytes(model, 8192, flash_attn=True) == compute_reserved_bytes(model, 32)
    for n_ctx in (256, 2048, 8192):
        assert (
            compute_working_bytes(model, n_ctx) <= compute_reserved_bytes(model, n_ctx) + 2 * 512 * 4 * n_ctx
        )
    assert compute_working_bytes(model, 4096) > compute_working_bytes(model, 1024)
    # flash attention: no score matrix, only the f16 mask grows with the context
    fa = compute_working_bytes(model, 4096, flash_attn=True)
    assert fa == 4 * 320 + 4 * 512 * (32 + 64) + 2 * 512 * 4096
    assert fa < compute_working_bytes(model, 4096)
    cpu_only = estimate_model(ModelLoad(model, 0, 1024))
    assert cpu_only.compute_gpu == 0 and cpu_only.compute_cpu > 0
    offloaded = estimate_model(ModelLoad(model, -1, 1024))
    assert offloaded.compute_gpu == compute_reserved_bytes(model, 1024)
    assert offloaded.compute_cpu < cpu_only.compute_cpu


def test_more_outputs_need_more_logits(model: ModelInfo) -> None:
    one = estimate_model(ModelLoad(model, 0, 512, n_outputs=1))
    many = estimate_model(ModelLoad(model, 0, 512, n_outputs=17))
    assert many.compute_cpu - one.compute_cpu >= 16 * 4 * model.vocab_size


def test_several_models_add_up(model: ModelInfo, tied_model: ModelInfo) -> None:
    a, b = ModelLoad(model, -1, 2048), ModelLoad(tied_model, -1, 2048)
    both = estimate_load([a, b])
    assert len(both.models) == 2
    assert both.gpu_overhead == GPU_CONTEXT_BYTES  # one CUDA context per process, not per model
    assert both.gpu_bytes == estimate_model(a).gpu_bytes + estimate_model(b).gpu_bytes + GPU_CONTEXT_BYTES
    assert both.cpu_bytes == estimate_model(a).cpu_bytes + estimate_model(b).cpu_bytes
    assert estimate_load([ModelLoad(model, 0, 2048)]).gpu_overhead == 0


def test_fits(model: ModelInfo) -> None:
    cpu_plan = estimate_load([ModelLoad(model, 0, 4096)])
    ok, msg = cpu_plan.fits(**_plenty(gpus=0))
    assert ok and msg.startswith("fits: ")

    ok, msg = cpu_plan.fits(available_ram=cpu_plan.cpu_bytes - 1, free_vram=0, gpu_count=0)
    assert not ok
    assert msg.startswith(f"needs {format_memory(cpu_plan.cpu_bytes)} RAM, ")
    assert "available — close other programs or use a smaller context" in msg
    assert "\n" not in msg


def test_fits_gpu(model: ModelInfo) -> None:
    gpu_plan = estimate_load([ModelLoad(model, -1, 4096)])
    assert gpu_plan.fits(**_plenty())[0]

    ok, msg = gpu_plan.fits(**_plenty(gpus=0))
    assert not ok and "no NVIDIA GPU was found" in msg and "GPU layers to 0" in msg

    ok, msg = gpu_plan.fits(available_ram=64 * GIB, free_vram=100 * MIB, gpu_count=1)
    assert not ok and "VRAM, 100 MiB free — offload fewer layers" in msg


def test_bad_load_settings(model: ModelInfo) -> None:
    with pytest.raises(ValueError, match="unknown KV cache type 'q3_x'"):
        ModelLoad(model, 0, 512, cache_type_k="q3_x")
    with pytest.raises(ValueError, match="context size"):
        ModelLoad(model, 0, 0)
    assert ModelLoad(model, 0, 512, cache_type_v="Q8_0").cache_type_v == "q8_0"


def test_describe(model: ModelInfo) -> None:
    text = estimate_model(ModelLoad(model, 3, 1024)).describe()
    assert text.startswith("test model (F32): weights ") and "VRAM" in text and "RAM" in text


# ---------------------------------------------------------------------------------------------------------
# real models: llama.cpp's own numbers (its load log), see docs/memory-estimate.md


@pytest.mark.real_model
def test_real_smollm2_matches_llama_cpp_buffers(smollm2_q4_path: Path) -> None:
    info = inspect_gguf(smollm2_q4_path)
    est = estimate_model(ModelLoad(info, 0, 2048))
    assert est.kv_cpu == 45 * MIB  # "CPU KV buffer size = 45.00 MiB"
    # llama.cpp: model 92.10 + KV 45.00 + output 0.19 + compute 99.38 MiB
    assert est.cpu_buffer_bytes == pytest.approx(236.67 * MIB, rel=0.03)
    assert estimate_model(ModelLoad(info, 0, 8192)).kv_cpu == 180 * MIB


@pytest.mark.real_model
def test_real_gemma_kv_cache(gemma_path: Path) -> None:
    info = inspect_gguf(gemma_path)
    # 3 global + 15 sliding-window layers, all allocated in full: 24 + 120 MiB at n_ctx 8192
    assert estimate_model(ModelLoad(info, 0, 8192)).kv_cpu == 144 * MIB
    est = estimate_model(ModelLoad(info, 0, 512))
    # llama.cpp: model 235.16 + KV 9.00 + output 1.00 + compute 514.5 MiB
    assert est.cpu_buffer_bytes == pytest.approx(759.7 * MIB, rel=0.03)
