"""The same training command on the GPU and on the CPU: wall time and final metrics.

  python benchmarks/train_cpu_vs_gpu.py --config configs/digits_cnn.py --out runs/cpu_vs_gpu.md

Runs `scripts/train.py --config CONFIG --workdir WORKDIR/PLATFORM` once with
`JAX_PLATFORMS=cuda` and once with `JAX_PLATFORMS=cpu` (fresh workdirs, the
compilation cache off, so both pay their compile), times each whole command,
reads its last evaluation from `metrics.jsonl`, and prints (and writes to
`--out`) one markdown table. A platform that is missing or fails gets a row
that says why.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def last_eval(workdir: str) -> dict:
    """The last logged evaluation (a metrics.jsonl line whose split is not "train")."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        events = [json.loads(line) for line in f if line.strip()]
    evals = [e for e in events if e.get("split") != "train"]
    return evals[-1] if evals else {}


def train(config: str, workdir: str, platform: str, timeout: float) -> dict:
    """Runs the train script on `platform`; its wall seconds and last evaluation, or an error."""
    env = {**os.environ, "JAX_PLATFORMS": platform}
    command = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", config,
               "--workdir", workdir, "--compilation_cache_dir="]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command, env=env, check=False, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": failure(proc.stderr, platform)}
    return {"wall_s": seconds, **last_eval(workdir)}


def failure(stderr: str, platform: str) -> str:
    """Why a run failed, in one line: the script's own `error:` line, or the traceback's end."""
    lines = stderr.strip().splitlines() or ["no output"]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][:200]
    if "Unable to initialize backend" in stderr or "_default_backend is not None" in stderr:
        return f"JAX has no {platform} backend on this machine"
    return lines[-1][:200]


def table(config: str, results: dict[str, dict]) -> str:
    """One markdown row per platform: wall time, step reached and every eval metric."""
    metrics = sorted({k for r in results.values() for k in r
                      if k not in ("wall_s", "step", "split", "error")})
    lines = [f"Training `{os.path.relpath(config, ROOT)}` (the whole command, compile included):",
             "", "| platform | wall s | step | " + " | ".join(metrics) + " |",
             "|" + " --- |" * (3 + len(metrics))]
    for platform, r in results.items():
        if "error" in r:
            lines.append(f"| {platform} | failed: {r['error']} |")
            continue
        values = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                  for k in metrics]
        lines.append(f"| {platform} | {r['wall_s']:.1f} | {r.get('step', '')} | "
                     + " | ".join(values) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "digits_cnn.py"))
    parser.add_argument("--out", help="Also write the table to this file.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds per platform.")
    parser.add_argument("--platforms", default="cuda,cpu", help="JAX platforms, in order.")
    args = parser.parse_args()
    if not os.path.isfile(args.config.split(":")[0]):
        sys.exit(f"error: config file {args.config!r} does not exist.")
    with tempfile.TemporaryDirectory() as tmp:
        results = {p: train(args.config, os.path.join(tmp, p), p, args.timeout)
                   for p in args.platforms.split(",")}
    text = table(args.config, results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
