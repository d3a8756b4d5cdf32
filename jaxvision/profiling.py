"""Why a step is fast or slow: XLA cost analysis, peak throughput, MFU, textbook FLOPs.

FLOPs and memory come from XLA's analysis of the *compiled* step, so they
describe what actually runs (fusions, padding, the optimizer update,
augmentation), not a formula; `matmul_flops` gives the textbook count of a
forward pass to compare it with. On one conv or dense layer XLA's count equals
the hand formula exactly (`tests/test_profiling.py`).

Per device, not global: `compiled.cost_analysis()` and
`compiled.memory_analysis()` describe the SPMD-partitioned program that *each
device* runs. Checked on 8 virtual CPU devices: a matmul whose batch is split
8 ways reports 1/8 of its FLOPs (`tests/test_profiling.py`). So the FLOPs of a
whole step are `compiled_flops(compiled) * num_devices`, and `mfu` takes those
global FLOPs with the per-device peak times the number of devices. Work that
every device repeats (a replicated optimizer update) is then counted once per
device, as hardware FLOPs are; for a CNN it is a negligible share.
"""

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Dense (not 2:4 sparse) peak TFLOP/s per GPU, from NVIDIA's datasheets (the
# H100, H200 and A100 Tensor Core GPU datasheets; their headline tensor-core
# figures are "with sparsity", which is twice the dense number used here).
# "float32" is plain (non-tensor-core) FP32; "tensorfloat32" is what float32
# matmuls and convolutions run at by default on Ampere and later, because JAX's
# default matmul precision lets XLA use TF32 tensor cores on those GPUs.
# Matched against `device.device_kind` by case-insensitive substring, first
# match wins, so the more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    # H100 PCIe: BF16/FP16 1,513 sparse, TF32 756 sparse, FP32 51.
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "tensorfloat32": 378.0, "float32": 51.0}),
    # H100 NVL (per GPU): BF16/FP16 1,671 sparse, TF32 835 sparse, FP32 60.
    ("H100 NVL", {"bfloat16": 835.0, "float16": 835.0, "tensorfloat32": 418.0, "float32": 60.0}),
    # H100 SXM ("NVIDIA H100 80GB HBM3"): BF16/FP16 1,979 sparse, TF32 989 sparse, FP32 67.
    ("H100", {"bfloat16": 989.0, "float16": 989.0, "tensorfloat32": 495.0, "float32": 67.0}),
    # GH200's GPU is an H100 SXM-class part: the same compute.
    ("GH200", {"bfloat16": 989.0, "float16": 989.0, "tensorfloat32": 495.0, "float32": 67.0}),
    # H200 NVL: BF16/FP16 1,671 sparse, TF32 835 sparse, FP32 60.
    ("H200 NVL", {"bfloat16": 835.0, "float16": 835.0, "tensorfloat32": 418.0, "float32": 60.0}),
    # H200 SXM ("NVIDIA H200"): the H100 SXM's compute with more, faster memory.
    ("H200", {"bfloat16": 989.0, "float16": 989.0, "tensorfloat32": 495.0, "float32": 67.0}),
    # A100 SXM4 and PCIe, 40 and 80 GB: BF16/FP16 312 (624 sparse), TF32 156, FP32 19.5.
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "tensorfloat32": 156.0, "float32": 19.5}),
)

# jax_default_matmul_precision values that make float32 matmuls true FP32.
_FULL_FP32_PRECISIONS = ("highest", "float32", "F32_F32_F32")


def _analysis(analyze: Any) -> Any:
    """Calls `compiled.cost_analysis` / `memory_analysis`: the result, or None.

    Older JAX returns a list with one entry per program; some backends
    implement neither.
    """
    try:
        result = analyze()
    except Exception:  # noqa: BLE001 - some backends do not implement it.
        return None
    if isinstance(result, list | tuple):
        result = result[0] if result else None
    return result


def _cost_dict(compiled: Any) -> dict[str, float] | None:
    """`compiled.cost_analysis()` as one dict."""
    cost = _analysis(compiled.cost_analysis)
    return dict(cost) if cost else None


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled function, per device, from XLA's cost analysis.

    Args:
      compiled: `jax.jit(f).lower(*args).compile()`.

    Returns:
      The FLOPs each device executes (multiply by the device count for the
      whole step; see the module docstring), or None if the backend gives none.
      XLA counts 2 per multiply-add and skips multiplications by a conv's
      zero padding.
    """
    cost = _cost_dict(compiled)
    if cost is None or cost.get("flops") is None:
        return None
    flops = float(cost["flops"])
    return flops if flops >= 0 else None


def compiled_memory_bytes(compiled: Any) -> dict[str, int] | None:
    """Per-device memory of a compiled function, from XLA's memory analysis.

    Returns:
      {"argument", "output", "alias", "temp", "generated_code", "peak"} in
      bytes, where `peak = argument + output + temp - alias` (aliased, i.e.
      donated, buffers counted once) estimates the live memory of one call;
      None if the backend gives no analysis.
    """
    stats = _analysis(compiled.memory_analysis)
    if stats is None:
        return None
    sizes = {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
        "generated_code": int(stats.generated_code_size_in_bytes),
    }
    sizes["peak"] = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
    return sizes


def lookup_peak_tflops(device_kind: str, dtype: str) -> tuple[float | None, str]:
    """Dense peak TFLOP/s of one GPU of `device_kind` for compute `dtype`, from `PEAK_TFLOPS`.

    Returns:
      `(tflops, source)`; `(None, reason)` for a device kind or dtype that is
      not in the table.
    """
    dtype = jnp.dtype(dtype).name
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            key = dtype
            if dtype == "float32":
                precision = str(jax.config.jax_default_matmul_precision or "default")
                full = precision in _FULL_FP32_PRECISIONS
                key = "float32" if full else "tensorfloat32"
            if key not in peaks:
                return None, f"no {dtype} peak for {device_kind!r} in profiling.PEAK_TFLOPS"
            return peaks[key], f"NVIDIA datasheet, dense {key} ({name})"
    return None, (
        f"unknown device kind {device_kind!r}: add its dense peak to "
        "jaxvision.profiling.PEAK_TFLOPS"
    )


def measure_cpu_peak_tflops(dtype: str = "float32", size: int = 2048, repeats: int = 3) -> float:
    """A measured *practical* peak of this host's CPUs: the best TFLOP/s of a big matmul.

    Times a jitted `[size, size] @ [size, size]` matmul in `dtype` whose rows
    are split over every CPU device, so all devices work at once and the
    figure is the whole host's, however many virtual CPU devices share its
    cores. One warm-up call, then the best of `repeats`. CPUs have no datasheet
    figure that XLA reaches, so this stands in as the peak in a CPU's MFU.
    """
    devices = jax.devices("cpu")
    mesh = Mesh(np.asarray(devices), ("d",))
    a = jax.device_put(jnp.ones((size, size), dtype), NamedSharding(mesh, P("d")))  # Rows split.
    b = jax.device_put(jnp.ones((size, size), dtype), NamedSharding(mesh, P()))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # Compile and warm up.
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def peak_tflops(device: jax.Device, dtype: str) -> tuple[float | None, str]:
    """Peak TFLOP/s of one `device` for compute `dtype`, and where the number comes from.

    GPUs: the datasheet table (`lookup_peak_tflops`). CPU: the host's
    measured matmul peak divided by the number of CPU devices (virtual CPU
    devices share the same cores), so that `peak * num_devices` is the host's.
    Anything else: `(None, reason)`.
    """
    if device.platform == "gpu" or device.platform == "cuda":
        return lookup_peak_tflops(device.device_kind, dtype)
    if device.platform == "cpu":
        count = len(jax.devices("cpu"))
        measured = measure_cpu_peak_tflops(dtype)
        share = f", shared by {count} CPU devices" if count > 1 else ""
        return measured / count, (
            f"measured: best jitted 2048x2048 {jnp.dtype(dtype).name} matmul on this "
            f"host ({measured:.3f} TFLOP/s{share})"
        )
    return None, f"no peak known for platform {device.platform!r} ({device.device_kind})"


def mfu(flops_per_step: float, step_time_s: float, peak_tflops: float, num_devices: int) -> float:
    """Model FLOPs utilization: achieved FLOP/s over the peak of all devices.

    Args:
      flops_per_step: FLOPs of one step over *all* devices
        (`compiled_flops(...) * num_devices`).
      step_time_s: seconds per step.
      peak_tflops: peak TFLOP/s of *one* device.
      num_devices: devices the step runs on.
    """
    return flops_per_step / step_time_s / (peak_tflops * 1e12 * num_devices)


def matmul_flops(fn: Any, *args: Any) -> int:
    """2 x multiply-adds of every convolution and matmul in `fn(*args)`, from its jaxpr.

    Counts the textbook way (padding taps included; no elementwise ops), so
    for a model's forward pass it is the figure papers quote (ResNet-50 at
    224 px: ~4.1 G multiply-adds per image, i.e. ~8.2 GFLOPs). Traces `fn`
    abstractly; nothing is computed.
    """
    return _jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_matmul_flops(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            depth = int(np.prod([lhs[d] for d in lhs_contract]))
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * depth
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_channels = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            per_output = int(np.prod(rhs)) // out_channels  # kh * kw * Cin / groups
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * per_output
        repeat = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in jex_core.jaxprs_in_params(eqn.params):
            total += repeat * _jaxpr_matmul_flops(sub)
    return total
