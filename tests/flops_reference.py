"""Hand formulas for the FLOPs of one conv or dense layer, to check XLA's counts against.

XLA counts 2 per multiply-add and skips multiplications by a conv's zero
padding; `conv_flops` counts the same way by default, and the textbook way
(padding taps included, as `profiling.matmul_flops`) with `count_padding=True`.
"""


def _taps(in_size: int, kernel: int, stride: int, pad_lo: int, out_size: int) -> int:
    """(output position, kernel tap) pairs along one axis that read inside the input."""
    return sum(
        0 <= o * stride - pad_lo + k < in_size for o in range(out_size) for k in range(kernel)
    )


def conv_flops(
    batch: int, input_hw: tuple[int, int], in_features: int, out_features: int,
    kernel_size: tuple[int, int], strides: tuple[int, int] = (1, 1),
    padding: str = "SAME", use_bias: bool = False, count_padding: bool = False,
) -> int:
    """2 x multiply-adds of a 2-D convolution (+ one add per output for a bias).

    By default only taps that read a real input pixel count, as XLA counts
    them; `count_padding=True` gives the textbook `2 * B * Ho * Wo * kh * kw *
    Cin * Cout`, which also counts the multiplications by the zero padding.

    Args:
      batch, input_hw, in_features, out_features: input `[B, H, W, Cin]`,
        output channels `Cout`.
      kernel_size, strides: `(kh, kw)`, `(sh, sw)`.
      padding: "SAME" (XLA's: extra padding at the end) or "VALID".
    """
    taps = 1
    out_hw = []
    for size, k, s in zip(input_hw, kernel_size, strides, strict=True):
        if padding == "SAME":
            out = -(-size // s)  # ceil
            pad_lo = max((out - 1) * s + k - size, 0) // 2
        elif padding == "VALID":
            out, pad_lo = (size - k) // s + 1, 0
        else:
            raise ValueError(f"padding must be 'SAME' or 'VALID', not {padding!r}")
        out_hw.append(out)
        taps *= out * k if count_padding else _taps(size, k, s, pad_lo, out)
    flops = 2 * batch * taps * in_features * out_features
    if use_bias:
        flops += batch * out_hw[0] * out_hw[1] * out_features
    return flops


def dense_flops(batch: int, in_features: int, out_features: int, use_bias: bool = False) -> int:
    """2 x multiply-adds of `[B, in] @ [in, out]` (+ one add per output for a bias)."""
    return 2 * batch * in_features * out_features + (batch * out_features if use_bias else 0)
