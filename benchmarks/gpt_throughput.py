"""GPT-score throughput: the original one-request-at-a-time loop vs the concurrent indicator.

Both run against the loopback OpenAI-compatible test server (tests/openai_server.py, in its own
process, as a remote API would be) with a fixed latency per reply, the same client settings
(model, temperature, timeout, retries) and the paper's judge prompt. Target (GPT-score issue): the
indicator scores at least 20x as many samples per second as the sequential loop.

    python benchmarks/gpt_throughput.py [--samples 200] [--latency 0.1] [--concurrency 32]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_samples(count: int):
    from selector.data.samples import Sample, Turn

    return [Sample(f"{n:06d}", REPO / "missing.jpg",
                   (Turn("gpt", f"A photo of object number {n} on a wooden table, seen from the "
                                "left, with soft light from a window behind it."),),
                   "missing.jpg") for n in range(count)]


def sequential(samples, base_url: str, model: str, timeout: float, retries: int) -> list:
    """The original script's shape: one blocking request per sample, one after the other."""
    import openai

    from selector.scoring.gpt_reply import parse_reply
    from selector.scoring.indicators.gpt import JUDGE_PROMPT, fill_prompt

    client = openai.OpenAI(api_key="EMPTY", base_url=base_url, timeout=timeout,
                           max_retries=retries)
    scores = []
    for sample in samples:
        instruction, caption = sample.rounds[0]
        response = client.chat.completions.create(
            model=model, temperature=1.0,
            messages=[{"role": "user", "content": fill_prompt(JUDGE_PROMPT, instruction, caption)}])
        scores.append(parse_reply(response.choices[0].message.content).score)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per reply")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the indicator's concurrency (default: its default)")
    args = parser.parse_args()

    from selector.scoring.indicators.gpt import GptScore

    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"),
                               "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        samples = make_samples(args.samples)
        settings = dict(model="gpt-4", timeout=60.0, max_retries=6)
        if args.concurrency:
            settings["concurrency"] = args.concurrency
        indicator = GptScore(base_url=base_url, progress=False, **settings)
        indicator.client()  # client creation (imports) is not part of either timing
        sequential(samples[:2], base_url, "gpt-4", 60.0, 6)  # warm-up

        started = time.perf_counter()
        old = sequential(samples, base_url, "gpt-4", 60.0, 6)
        old_seconds = time.perf_counter() - started

        started = time.perf_counter()
        new = indicator.score(samples)
        new_seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()

    assert [v.value for v in new] == [float(s) for s in old], "the two paths disagree"
    assert all(v.problem is None for v in new)
    old_rate, new_rate = args.samples / old_seconds, args.samples / new_seconds
    target = 20.0
    print(f"{args.samples} samples, {args.latency * 1000:.0f} ms per reply, loopback server:")
    print(f"  original sequential loop: {old_seconds:7.2f} s  {old_rate:8.1f} samples/s")
    print(f"  GptScore.score (concurrency {indicator.concurrency}): {new_seconds:7.2f} s  "
          f"{new_rate:8.1f} samples/s")
    print(f"  speed-up {new_rate / old_rate:.1f}x  (target >= {target:.0f}x: "
          f"{'met' if new_rate / old_rate >= target else 'NOT met'})")


if __name__ == "__main__":
    main()
