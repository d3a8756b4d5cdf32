"""The standard benchmark set, jaxvision next to torchvision, as one markdown table.

`python scripts/benchmark.py --suite cpu` (or `gpu`) runs every entry of
`SUITES[suite]`: jaxvision's step through `scripts/benchmark.py`, and, where
torch and torchvision are installed (`pip install -e ".[peers]"`), the same
model, batch, image size, dtype and optimizer through the torchvision peer
script of its family in `benchmarks/`, eager and under `torch.compile`.
Every measurement runs in a fresh process, one at a time, so no run shares
threads, memory or a warm cache with another; a run that fails or passes its
time limit becomes a table cell that says so, not a crashed suite.

This module drives the checkout's scripts, so it works from a jaxvision
checkout (an editable install), not from an installed wheel alone.
"""

import dataclasses
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

from absl import logging

from jaxvision import benchmark
from jaxvision.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # The checkout.
_PEER_SCRIPTS = {  # Task -> the torchvision peer of its model family.
    "classification": "torchvision_classification.py",
    "detection": "torchvision_detection.py",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a suite: a config at a batch, image size and dtype, one step.

    Attributes:
      name: the row's label.
      config: `configs/FILE.py[:variant]`, relative to the checkout.
      task: the config's task; picks the peer script.
      mode: "train" (the train step) or "eval" (the inference step).
      batch_size: global batch.
      image_size: crop side (classification) or canvas side (detection);
        None keeps the config's.
      dtype: the compute dtype (the peer's autocast dtype).
      steps: timed steps.
      warmup: untimed steps before them (after compiling).
      overrides: extra `--config.KEY=VALUE` flags, given to both frameworks.
      peer_compile: also time the peer under `torch.compile` (minutes of
        compiling for a detector's train step, so the GPU suite skips it there).
    """

    name: str
    config: str
    task: str
    mode: str
    batch_size: int
    image_size: int | None
    dtype: str
    steps: int
    warmup: int
    overrides: tuple[str, ...] = ()
    peer_compile: bool = True


_FCOS = "configs/coco_fcos_r50_fpn.py"
_RETINANET = "configs/coco_retinanet_r50_fpn.py"
_FASTER_RCNN = "configs/coco_faster_rcnn_r50_fpn.py"
_MASK_RCNN = "configs/coco_mask_rcnn_r50_fpn.py"
_R18 = ("--config.model.backbone=resnet18",)

SUITES: dict[str, tuple[Entry, ...]] = {
    # A 2-core CPU: float32, small images, few steps (ResNet-50 takes seconds a step).
    "cpu": (
        Entry("digits_cnn", "configs/digits_cnn.py", "classification", "train",
              64, None, "float32", steps=50, warmup=5),
        Entry("ResNet-50", "configs/imagenet_resnet50.py", "classification", "train",
              16, 128, "float32", steps=5, warmup=2),
        Entry("ResNet-50", "configs/imagenet_resnet50.py", "classification", "eval",
              16, 128, "float32", steps=5, warmup=2),
        Entry("FCOS R18-FPN", _FCOS, "detection", "train",
              16, 128, "float32", steps=5, warmup=2, overrides=_R18),
        Entry("RetinaNet R18-FPN", _RETINANET, "detection", "train",
              16, 128, "float32", steps=5, warmup=2, overrides=_R18),
        # The two-stage detectors at their digit_detection sizes (the COCO ones'
        # 2,000 proposals and 512 RoIs per image take seconds a step here).
        Entry("Faster R-CNN R18-FPN", "configs/digit_detection_faster_rcnn.py", "detection",
              "train", 32, None, "float32", steps=5, warmup=2),
        Entry("Mask R-CNN R18-FPN", "configs/digit_detection_mask_rcnn.py", "detection",
              "train", 32, None, "float32", steps=5, warmup=2),
    ),
    # One H100/H200, in under 9 minutes (benchmarks/gpu_suite.sh has 11 in all); the
    # two-stage rows come last, so a suite cut short by its time limit keeps the others:
    # the configs' own shapes and bf16.
    "gpu": (
        Entry("ResNet-50", "configs/imagenet_resnet50.py", "classification", "train",
              256, 224, "bfloat16", steps=30, warmup=5),
        Entry("ResNet-50", "configs/imagenet_resnet50.py", "classification", "eval",
              256, 224, "bfloat16", steps=30, warmup=5, peer_compile=False),
        Entry("FCOS R50-FPN", _FCOS, "detection", "train",
              16, 1024, "bfloat16", steps=20, warmup=3, peer_compile=False),
        Entry("RetinaNet R50-FPN", _RETINANET, "detection", "train",
              16, 1024, "bfloat16", steps=20, warmup=3, peer_compile=False),
        Entry("Faster R-CNN R50-FPN", _FASTER_RCNN, "detection", "train",
              16, 1024, "bfloat16", steps=20, warmup=3, peer_compile=False),
        Entry("Mask R-CNN R50-FPN", _MASK_RCNN, "detection", "train",
              16, 1024, "bfloat16", steps=20, warmup=3, peer_compile=False),
    ),
}


def peers_installed() -> bool:
    """Whether torch and torchvision can be imported (the `.[peers]` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))


def _flags(entry: Entry) -> list[str]:
    """The flags both frameworks' scripts take for `entry`."""
    args = [
        "--config", os.path.join(ROOT, entry.config), f"--batch_size={entry.batch_size}",
        f"--dtype={entry.dtype}", f"--steps={entry.steps}", f"--warmup={entry.warmup}",
        *entry.overrides,
    ]
    if entry.image_size is not None:
        args.append(f"--image_size={entry.image_size}")
    return args


def commands(entry: Entry, device: str, peers: bool) -> dict[str, list[str]]:
    """The command of each measurement of `entry`, by column: "jaxvision", "eager", "compiled".

    Args:
      entry: the suite row.
      device: "cpu" or "gpu".
      peers: include the torchvision peer's two runs.
    """
    script = os.path.join(ROOT, "scripts", "benchmark.py")
    runs = {"jaxvision": [script, *_flags(entry), f"--{entry.mode}", f"--device={device}",
                          "--compilation_cache_dir="]}  # Compile cold, as torch.compile does.
    if peers:
        peer = os.path.join(ROOT, "benchmarks", _PEER_SCRIPTS[entry.task])
        torch_device = "cuda" if device == "gpu" else "cpu"
        base = [peer, *_flags(entry), f"--mode={entry.mode}", f"--device={torch_device}"]
        runs["eager"] = base
        if entry.peer_compile:
            runs["compiled"] = [*base, "--compile"]
    return runs


def _run(argv: list[str], timeout: float) -> dict[str, Any]:
    """Runs one measurement script in a fresh Python; its JSON, or {"error": why}.

    Compilation caches are off on both sides (jaxvision's persistent cache by
    `commands`, torch inductor's here), so compile times are cold ones.
    """
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        try:
            proc = subprocess.run(
                [sys.executable, *argv, f"--json={path}"], check=False, capture_output=True,
                text=True, timeout=timeout, cwd=ROOT, env=env,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timeout after {timeout:.0f} s"}
        if proc.returncode != 0 or not os.path.isfile(path):
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            return {"error": textwrap.shorten(lines[-1].removeprefix("error: "), 200)}
        with open(path) as f:
            return json.load(f)


def run_suite(
    suite: str, *, peers: bool | None = None, timeout: float = 900.0,
    entries: tuple[Entry, ...] | None = None, json_path: str | None = None,
) -> dict[str, Any]:
    """Runs every entry of `SUITES[suite]` and returns all results.

    Args:
      suite: "cpu" or "gpu" (also the device every run uses).
      peers: run the torchvision peers; None: when torch and torchvision are installed.
      timeout: seconds one measurement may take before it is recorded as a timeout.
      entries: the rows to run instead of the whole suite (tests use a small one).
      json_path: rewrite the results there after every row, so that an
        interrupted suite keeps what it measured.

    Returns:
      {"suite", "date", "peers", "rows": [{"entry": ..., "jaxvision": result,
      "eager": result, "compiled": result}]}, each result a script's JSON or
      {"error": ...}.
    """
    if suite not in SUITES:
        raise UserError(f"Unknown suite {suite!r}; use one of {sorted(SUITES)}.")
    if peers is None:
        peers = peers_installed()
    elif peers and not peers_installed():
        raise UserError(
            'The torchvision peers need torch and torchvision; pip install -e ".[peers]", '
            "or run without --peers."
        )
    results = {
        "suite": suite, "date": datetime.date.today().isoformat(), "peers": peers,
        "rows": [],
    }
    for entry in entries or SUITES[suite]:
        row = {"entry": dataclasses.asdict(entry)}
        for column, argv in commands(entry, suite, peers).items():
            logging.info("%s %s (%s): %s", entry.name, entry.mode, column, " ".join(argv))
            row[column] = _run(argv, timeout)
        results["rows"].append(row)
        if json_path:
            benchmark.write_json(results, json_path)
    return results


def _rate(result: dict[str, Any] | None) -> str:
    """images/s of one result, or why there is none."""
    if result is None:
        return "not run"
    if "error" in result:
        return f"failed: {result['error']}"
    return f"{result['images_per_s']:,.1f}"


def _bytes(value: float | None) -> str:
    return "" if value is None else f"{value / 2**30:.2f} GiB"


def _ratio(row: dict[str, Any]) -> str:
    """jaxvision's images/s over the best torchvision figure (eager or compiled)."""
    ours = row["jaxvision"].get("images_per_s")
    theirs = [r["images_per_s"] for r in (row.get("eager"), row.get("compiled"))
              if r and "images_per_s" in r]
    return f"{ours / max(theirs):.2f}x" if ours and theirs else ""


def format_table(results: dict[str, Any]) -> str:
    """The suite's results as one markdown table, one row per entry.

    Memory: jaxvision's is the device's own peak on a GPU, XLA's per-device
    estimate on a CPU; torchvision's is `torch.cuda.max_memory_allocated` on a
    GPU and the process's peak RSS on a CPU (so CPU figures are not comparable).
    """
    header = (
        "| model | step | batch | image | dtype | jaxvision img/s | torchvision eager img/s "
        "| torchvision compiled img/s | ratio | MFU | compile s (jaxvision / torch.compile) "
        "| peak memory (jaxvision / torchvision) |"
    )
    lines = [header, "|" + " --- |" * 12]
    for row in results["rows"]:
        entry, ours = row["entry"], row["jaxvision"]
        eager, compiled = row.get("eager"), row.get("compiled")
        image = ours.get("image_size", entry["image_size"])
        mfu = f"{ours['mfu']:.2f}" if ours.get("mfu") is not None else ""
        compile_s = f"{ours['compile_s']:.0f}" if "compile_s" in ours else ""
        if compiled and "compile_s" in compiled:
            compile_s += f" / {compiled['compile_s']:.0f}"
        ours_memory = ours.get("device_peak_bytes") or ours.get("memory_per_device", {}).get("peak")
        memory = _bytes(ours_memory)
        if eager and "peak_memory_bytes" in eager:
            memory += f" / {_bytes(eager['peak_memory_bytes'])}"
        lines.append(
            f"| {entry['name']} | {entry['mode']} | {entry['batch_size']} | {image} "
            f"| {entry['dtype']} | {_rate(ours)} | {_rate(eager)} | {_rate(compiled)} "
            f"| {_ratio(row)} | {mfu} | {compile_s} | {memory} |"
        )
    return "\n".join(lines)


def describe(results: dict[str, Any]) -> str:
    """One line naming the device, versions and date of a suite run."""
    ours = next((r["jaxvision"] for r in results["rows"] if "error" not in r["jaxvision"]), {})
    peer = next((r[c] for r in results["rows"] for c in ("eager", "compiled")
                 if c in r and "error" not in r[c]), {})
    parts = [
        f"suite `{results['suite']}`, {results['date']}",
        f"device {ours.get('device_kind', 'unknown')} x {ours.get('num_devices', '?')}",
        f"jax {ours.get('jax_version', '?')}",
    ]
    if peer:
        parts.append(
            f"torch {peer.get('torch_version')}, torchvision {peer.get('torchvision_version')} "
            f"({peer.get('num_threads')} threads)"
        )
    elif not results["peers"]:
        parts.append('torchvision peers not run (pip install -e ".[peers]")')
    return "; ".join(parts)
