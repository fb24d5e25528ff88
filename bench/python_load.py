"""Benchmark: time-to-tensors and peak memory of loading the full Mamba weights from Python,
tantra against the reference loaders, in one run.

    python bench/python_load.py [--root DIR] [--runs N]

Needs a Python with the ``tantra`` package, torch and safetensors (``.venv-test`` after
``bash scripts/test-all``, or ``pip install ./crates/tantra-py torch safetensors``) and the
full Mamba weights in a weights root (default ``bench/out/root``; made with
``tantra create-model-weights --models mamba --root DIR`` if missing, from this tree's release
build).

For each file (the same tensors as .safetensors, .pt and .bin) and each loader, every run is a
fresh Python process (imports done before the clock starts) that loads the file and then reads
every tensor once (``t.sum()``), with the file in the page cache (one unmeasured warm-up run
first). Reported: median seconds to the dict of tensors (``load``), median seconds including
the read of every value (``load+read``), and the peak resident memory the load added (max RSS
after minus RSS before, MiB), next to the file size. Ratios are the reference's time over
tantra's (above 1: tantra is faster). Loaders:

* .safetensors: ``tantra.load_file(framework="torch")`` vs ``safetensors.torch.load_file``
* .pt / .bin:   ``tantra.load_file(framework="torch")`` vs ``torch.load(weights_only=True)``
  and ``torch.load(weights_only=True, mmap=True)``
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def child(loader: str, path: str) -> None:
    import resource
    import time

    import torch

    import tantra
    import safetensors.torch as st

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before = rss_mib()
    t0 = time.perf_counter()
    if loader == "tantra":
        sd = tantra.load_file(path, framework="torch")
    elif loader == "safetensors":
        sd = st.load_file(path)
    elif loader == "torch":
        sd = torch.load(path, weights_only=True)
    elif loader == "torch-mmap":
        sd = torch.load(path, weights_only=True, mmap=True)
    else:
        raise SystemExit(f"unknown loader {loader}")
    t1 = time.perf_counter()
    total = 0.0
    for t in sd.values():
        total += float(t.float().sum()) if t.is_floating_point() else float(t.sum())
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load": t1 - t0, "read": t2 - t0, "peak_mib": peak - before,
                      "tensors": len(sd), "checksum": total}))


def ensure_weights(root: pathlib.Path) -> None:
    if (root / "weights").is_dir() and any((root / "weights").glob("mamba_full_*")):
        return
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tantra"], cwd=REPO, check=True)
    subprocess.run([str(REPO / "target/release/tantra"), "create-model-weights", "--models", "mamba",
                    "--root", str(root)], check=True)


def run(loader: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", loader, path],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(HERE / "out" / "root"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"))
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    import tantra

    root = pathlib.Path(a.root)
    ensure_weights(root)
    wm = tantra.WeightManager(root)
    load_before = open("/proc/loadavg").read().split()[:3]
    cases = [("safetensors", ["tantra", "safetensors"]), ("pt", ["tantra", "torch", "torch-mmap"]),
             ("bin", ["tantra", "torch", "torch-mmap"])]
    results = {}
    for fmt, loaders in cases:
        path = wm.resolve("mamba", "full", fmt)["path"]
        size = os.path.getsize(path) / 2**20
        for loader in loaders:  # warm the page cache and the interpreter's files
            run(loader, path)
        rounds = {l: [] for l in loaders}
        for _ in range(a.runs):
            for loader in loaders:  # take turns within a round
                rounds[loader].append(run(loader, path))
        checks = {l: rounds[l][0]["checksum"] for l in loaders}
        assert len({round(c, 3) for c in checks.values()}) == 1, f"loaders disagree: {checks}"
        results[fmt] = {"file_mib": size, "tensors": rounds["tantra"][0]["tensors"]}
        for loader in loaders:
            rs = rounds[loader]
            results[fmt][loader] = {
                "load_s": statistics.median(r["load"] for r in rs),
                "load_read_s": statistics.median(r["read"] for r in rs),
                "peak_mib": statistics.median(r["peak_mib"] for r in rs),
            }
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}; "
          f"median of {a.runs} runs, page cache warm")
    print(f"{'file':<12} {'loader':<12} {'load s':>9} {'ratio':>7} {'load+read s':>12} {'ratio':>7} "
          f"{'peak MiB':>9} {'file MiB':>9}")
    for fmt, r in results.items():
        ref = r["safetensors" if fmt == "safetensors" else "torch"]
        for loader in [k for k in r if isinstance(r[k], dict)]:
            m = r[loader]
            print(f"{fmt:<12} {loader:<12} {m['load_s']:>9.4f} {ref['load_s'] / m['load_s']:>7.2f} "
                  f"{m['load_read_s']:>12.4f} {ref['load_read_s'] / m['load_read_s']:>7.2f} "
                  f"{m['peak_mib']:>9.1f} {r['file_mib']:>9.1f}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "python_load.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
