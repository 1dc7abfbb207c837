"""Default-mode selector scoring of a large pool: time and peak memory, against the targets.

Target (foundation issue): a 100k-sample pool with random features scores in well under a minute
on 2 cores and stays under 2 GB. Also prints what the reference mode (whole pool as one attention
sequence, O(N^2) memory) would need for the same pool.

    python benchmarks/score_pool.py [--samples 100000]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def measure(samples: int, rounds: int) -> None:
    import numpy as np
    import torch

    from selector.core.settings import load_settings
    from selector.model.network import SelectorConfig, build, score_features
    from selector.scoring.reference import REFERENCE_INDICATORS

    torch.set_num_threads(2)
    features = np.random.default_rng(0).normal(size=(samples, 16)).astype(np.float32)
    model = build(SelectorConfig(**{**load_settings(None, [])["model"], "image_dim": 6,
                                    "text_dim": 6, "indicator_names": list(REFERENCE_INDICATORS),
                                    "context_size": 114, "score_rounds": rounds}), seed=0)
    started = time.perf_counter()
    scores = score_features(model, features)
    elapsed = time.perf_counter() - started
    assert np.isfinite(scores).all() and scores.shape == (samples,)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{elapsed:.3f} {peak_mb:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.samples, args.rounds)
        return
    # a fresh process per measurement, so peak RSS is this measurement's own
    out = subprocess.run([sys.executable, __file__, "--child", "--samples", str(args.samples),
                          "--rounds", str(args.rounds)], capture_output=True, text=True, check=True)
    seconds, peak_mb = map(float, out.stdout.split()[-2:])
    time_target, memory_target = 60.0, 2048.0
    print(f"default mode, {args.samples} samples, {args.rounds} rounds of sets of 114:")
    print(f"  time {seconds:.2f} s  (target < {time_target:.0f} s: {seconds / time_target:.3f} "
          "of the budget)")
    print(f"  peak RSS {peak_mb:.0f} MB  (target < {memory_target:.0f} MB: "
          f"{peak_mb / memory_target:.3f} of the budget)")
    attention_gb = args.samples ** 2 * 4 * 2 / 2 ** 30  # one N x N float32 matrix per layer
    print(f"reference mode on the same pool would hold N x N attention: >= {attention_gb:.0f} GB "
          f"({attention_gb * 1024 / max(peak_mb, 1):.0f}x the default mode's peak)")


if __name__ == "__main__":
    main()
