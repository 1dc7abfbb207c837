"""Selection from cached features at 3.4k, 100k and 1M samples: the whole ``igpt4 select`` path
(load the pool file, score, cluster, quotas + top-k, write), time and peak memory, against the
target: 1M samples in <= 60 s and <= 4 GB peak on this machine's 2 CPU cores; beside the original
approach where it can run at all; and the agreement (adjusted Rand index) of the scalable
diversity clustering with the exact one.

Pools are synthetic, with the real pool format's shapes (``selector/scoring/pool.py``, configs): image and
text PCA features [N, 6] each, indicators clip, reward, length, gpt [N, 4], and the saved PCAs
(CLIP ViT-bigG-14 image embeddings are 1280 wide, Llama-2-7b hidden states 4096). The image
features are an overlapping Gaussian mixture (a continuous cloud like the released PCA features,
whose exact spectral clustering is stable across seeds); the selector is a default-mode
checkpoint with random weights (time does not depend on the weights). Every measurement runs in
a fresh process, so its peak RSS (``ru_maxrss``, imports included) is its own. Pools, the
checkpoint and exact cluster labels are cached in ``--work`` (a rerun reuses them).

The original approach: scoring with the whole pool as one attention sequence (the original
``eval_clus.py`` even repeated the pool 114 times along the batch: 114 copies of the N x N
weights), exact ``SpectralClustering`` (ARPACK shift-invert on the N x N graph Laplacian) and the
quota / top-k rule as Python sorts. Each runs where it fits in memory, under ``--exact-timeout``;
otherwise the script prints what it would need.

    python benchmarks/selection_scale.py [--sizes 3439,100000,1000000]
        [--ari-sizes 3439,20000,50000] [--exact-timeout 60] [--work /tmp/igpt4-selection-scale]
        [--method-sizes 1000000] [--methods-only]

The model-free selection methods (random, cluster-random, top, bottom, threshold, length,
semdedup) are timed end to end at ``--method-sizes`` (target: each < 60 s at 1M samples on 2
cores).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS, TARGET_MB, TARGET_SIZE = 60.0, 4096.0, 1_000_000
IMAGE_EMBEDDING, TEXT_EMBEDDING = 1280, 4096  # CLIP ViT-bigG-14, Llama-2-7b hidden size
HEADS, CONTEXT = 4, 114  # the selector's attention heads; the original's subset size


def synthetic_image_features(n: int, seed: int = 0):
    """The pool's image PCA features: 30 overlapping anisotropic Gaussians in 6 dims."""
    import numpy as np

    model = np.random.default_rng(12345)
    means = model.normal(scale=5.0, size=(30, 6))
    scales = model.uniform(1.75, 3.25, size=(30, 6))
    weights = model.dirichlet(np.full(30, 5.0))
    rng = np.random.default_rng(seed)
    component = rng.choice(30, size=n, p=weights)
    return (means[component] + rng.normal(size=(n, 6)) * scales[component]).astype(np.float32)


def make_pool(path: Path, n: int, seed: int = 0) -> Path:
    import numpy as np

    from selector.scoring.pool import FeaturePool

    if path.is_file():
        return path
    rng = np.random.default_rng(seed + 1)
    indicators = np.stack([rng.normal(30.0, 2.0, n),                      # clip
                           rng.normal(0.0, 1.0, n),                       # reward (logit)
                           10 * rng.uniform(50, 1009, n) / 1009,          # length
                           np.clip(np.round(rng.normal(80, 8, n)), 0, 100)], axis=1)  # gpt
    extra = {}
    for name, width in (("image", IMAGE_EMBEDDING), ("text", TEXT_EMBEDDING)):
        components = np.linalg.qr(rng.normal(size=(width, 6)))[0].T
        extra.update({f"pca.{name}.mean": rng.normal(size=width).astype(np.float32),
                      f"pca.{name}.components": components.astype(np.float32),
                      f"pca.{name}.explained_variance_ratio":
                          np.linspace(0.2, 0.05, 6).astype(np.float32)})
    pool = FeaturePool([str(i) for i in range(2, n + 2)], synthetic_image_features(n, seed),
                       rng.normal(scale=4.0, size=(n, 6)), indicators,
                       ["clip", "reward", "length", "gpt"], extra,
                       {"note": "synthetic (benchmarks/selection_scale.py)"})
    return pool.save(path)


def make_checkpoint(folder: Path, pool_path: Path) -> Path:
    import torch

    from selector.core.settings import load_settings
    from selector.model.network import SelectorConfig, build, save_checkpoint
    from selector.scoring.pool import FeaturePool

    if (folder / "selector.json").is_file():
        return folder
    pool = FeaturePool.load(pool_path)
    model = build(SelectorConfig(**{**load_settings(None, [])["model"], "image_dim": 6,
                                    "text_dim": 6, "indicator_names": pool.indicator_names,
                                    "context_size": CONTEXT, "score_rounds": 4}), seed=0)
    model.set_normalisation(torch.from_numpy(pool.features), torch.tensor([30.2, 30.8, 31.4]))
    return save_checkpoint(model, folder, {"note": "random weights, for timing only"})


# --- children: one measurement per fresh process ---------------------------------------------

def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_select(args: Dict[str, Any]) -> Dict[str, Any]:
    """``igpt4 select`` (selection.select.select), with each stage's time recorded on the way."""
    import selector.selection.clustering
    import selector.selection.select
    import selector.selection.write
    import selector.model.training
    import selector.scoring.pool
    import selector.selection.rule
    from selector.core.settings import load_settings

    stages: Dict[str, float] = {}

    def timed(name, function):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    load = selector.scoring.pool.FeaturePool.load.__func__
    selector.scoring.pool.FeaturePool.load = classmethod(timed("load", load))
    selector.model.training.Selector.predict = timed("score",
                                                     selector.model.training.Selector.predict)
    selector.selection.clustering.diversity_clusters = timed("cluster",
                                                   selector.selection.clustering.diversity_clusters)
    selector.selection.rule.select_diverse_top_k_labels = timed(
        "quota_top_k", selector.selection.rule.select_diverse_top_k_labels)
    selector.selection.select.write_selection = timed("write", selector.selection.write.write_selection)
    settings = load_settings(None, [f"selection.clustering={args['clustering']}"])
    started = time.perf_counter()
    selected = selector.selection.select.select(args["out"], settings, args["pool"], args["checkpoint"])
    total = time.perf_counter() - started
    manifest = json.loads((Path(args["out"]) / "manifest.json").read_text())
    return {"seconds": total, "peak_mb": peak_mb(), "stages": stages,
            "selected": len(selected), "clustering": manifest["clustering"]["method"]}


def child_reference_scoring(args: Dict[str, Any]) -> Dict[str, Any]:
    """The original semantics: one attention sequence over the whole pool, unchunked."""
    import numpy as np

    from selector.core.settings import load_settings
    from selector.model.network import SelectorConfig, build, score_features
    from selector.scoring.pool import FeaturePool

    pool = FeaturePool.load(args["pool"])
    model = build(SelectorConfig(**{**load_settings(None, [])["model"], "mode": "reference",
                                    "image_dim": 6, "text_dim": 6,
                                    "indicator_names": pool.indicator_names}), seed=0)
    started = time.perf_counter()
    scores = score_features(model, pool.features, reference_budget_bytes=1 << 62)
    assert np.isfinite(scores).all()
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb()}


def child_exact(args: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    from selector.selection.clustering import spectral_clusters
    from selector.scoring.pool import FeaturePool

    image = FeaturePool.load(args["pool"]).image if args.get("pool") else \
        synthetic_image_features(args["n"])
    started = time.perf_counter()
    labels = spectral_clusters(image, 10, 10, seed=int(args.get("seed", 0)))
    seconds = time.perf_counter() - started
    np.save(args["labels_out"], labels)
    return {"seconds": seconds, "peak_mb": peak_mb()}


def child_quota(args: Dict[str, Any]) -> Dict[str, Any]:
    """The quota / top-k rule on N samples: the original's Python sorts vs the array rule."""
    import numpy as np

    from selector.selection.rule import (clusters_from_labels, select_diverse_top_k_labels,
                                    select_diverse_top_k_loop)

    n = args["n"]
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(2, n + 2)]
    scores = rng.normal(30.0, 1.0, n)
    labels = rng.integers(0, 10, n)
    out: Dict[str, Any] = {}
    for truncate in (False, True):
        started = time.perf_counter()
        ours = select_diverse_top_k_labels(ids, scores, labels, 200, truncate_scores=truncate,
                                           fill_up=not truncate)
        array_s = time.perf_counter() - started
        started = time.perf_counter()
        loop = select_diverse_top_k_loop(ids, scores, clusters_from_labels(ids, labels), 200,
                                         truncate_scores=truncate, fill_up=not truncate)
        loop_s = time.perf_counter() - started
        out["truncated" if truncate else "float"] = {
            "array_s": array_s, "loop_s": loop_s, "same": ours.selected == loop.selected}
    return out


def child_ari(args: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from selector.selection.clustering import scalable_spectral_clusters

    if args.get("reference"):
        from selector.scoring.reference import ReferenceRepo

        image = ReferenceRepo(Path(args["reference"])).pool().image
    else:
        image = synthetic_image_features(args["n"])
    exact = np.load(args["exact_labels"], allow_pickle=False)
    exact_other_seed = np.load(args["exact_labels_seed1"], allow_pickle=False) \
        if args.get("exact_labels_seed1") else None
    result: Dict[str, Any] = {"scalable": []}
    for seed in (0, 1, 2):
        started = time.perf_counter()
        labels = scalable_spectral_clusters(image, 10, 10, seed=seed)
        result["scalable"].append({"seed": seed, "ari": adjusted_rand_score(exact, labels),
                                   "seconds": time.perf_counter() - started})
    if exact_other_seed is not None:
        result["exact_seed1_ari"] = adjusted_rand_score(exact, exact_other_seed)
    return result


#: the selection methods that need no model (issue 14), timed at 1M samples
MODEL_FREE = ("random", "cluster-random", "top:clip", "bottom:clip", "threshold:clip=30",
              "length", "semdedup")


def make_captions(folder: Path, n: int, seed: int = 0) -> Path:
    """A cc_sbu_align ``filter_cap.json`` for the synthetic pool's ids (no images: the length
    method reads only the text), captions of 5..120 words."""
    import numpy as np

    if (folder / "filter_cap.json").is_file():
        return folder
    words = np.random.default_rng(seed + 2).integers(5, 121, n)
    vocabulary = ["a", "photo", "of", "the", "red", "bus", "parked", "near", "street", "corner"]
    sentence = " ".join(vocabulary * 12)
    cut = np.cumsum([len(w) + 1 for w in vocabulary * 12])  # character end of each word
    folder.mkdir(parents=True, exist_ok=True)
    annotations = [{"image_id": str(i + 2), "caption": sentence[:int(cut[k - 1]) - 1]}
                   for i, k in enumerate(words.tolist())]
    (folder / "filter_cap.json").write_text(json.dumps({"annotations": annotations}),
                                            encoding="utf-8")
    return folder


def child_method(args: Dict[str, Any]) -> Dict[str, Any]:
    """``igpt4 select --method SPEC`` (selection.select.select) on the pool: the method's scores,
    the diversity clustering when the method has it on, the keep step and the write. ``length``
    reads the captions file first (timed as ``read data``; its image files are not checked)."""
    import selector.selection.methods
    import selector.selection.select
    from selector.core.settings import load_settings

    stages: Dict[str, float] = {}
    started = time.perf_counter()
    data = None
    if args.get("data"):
        from selector.data.samples import read_pool

        data = read_pool(Path(args["data"]), check_images=False)
        stages["read data"] = time.perf_counter() - started
    choose = selector.selection.methods.choose

    def timed_choose(*a, **k):
        begun = time.perf_counter()
        try:
            return choose(*a, **k)
        finally:
            stages["keep (+cluster)"] = time.perf_counter() - begun
    selector.selection.methods.choose = timed_choose
    write = selector.selection.select.write_selection

    def timed_write(*a, **k):
        begun = time.perf_counter()
        try:
            return write(*a, **k)
        finally:
            stages["write"] = time.perf_counter() - begun
    selector.selection.select.write_selection = timed_write
    settings = load_settings(None, ["selection.clustering=auto"])
    selected = selector.selection.select.select(args["out"], settings, args["pool"],
                                                method=args["method"], seed=0,
                                                loaded_data=data)
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb(), "stages": stages,
            "selected": len(selected)}


def report_methods(work: Path, pools: Dict[int, Path], sizes: list) -> None:
    """Every model-free method end to end (fresh process each), seconds against the target."""
    print("\nmodel-free selection methods: igpt4 select --method SPEC --seed 0, 200 samples, end "
          "to end (load the pool, score, diversity step where on, write the manifest of every "
          f"sample), fresh process each, {os.cpu_count()} CPU cores")
    print(f"{'samples':>9} {'method':>18} {'total s':>8} {'peak MB':>8}  stages (s)")
    for n in sizes:
        data = make_captions(work / f"captions_{n}", n)
        for spec in MODEL_FREE:
            result = run_child("method", {"pool": str(pools[n]), "method": spec,
                                          "out": str(work / f"method_{n}"),
                                          "data": str(data) if spec == "length" else None},
                               timeout=600)
            stages = "  ".join(f"{k} {v:.1f}" for k, v in result["stages"].items())
            met = "" if n != TARGET_SIZE else (
                "  < 60 s: MET" if result["seconds"] < TARGET_SECONDS else "  < 60 s: NOT MET")
            print(f"{n:>9,} {spec:>18} {result['seconds']:>8.1f} {result['peak_mb']:>8.0f}  "
                  f"{stages}{met}")
    print("(length: the real path, answers counted from a synthetic filter_cap.json of "
          "5..120-word captions read with --data; the other methods read only the pool file)")


CHILDREN = {"select": child_select, "reference": child_reference_scoring, "exact": child_exact,
            "quota": child_quota, "ari": child_ari, "method": child_method}


def run_child(mode: str, args: Dict[str, Any], timeout: Optional[float]) -> Optional[dict]:
    """A fresh interpreter; None when it ran past ``timeout`` seconds (it is then killed)."""
    try:
        done = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(args)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------

def gb(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:,.1f} GB" if n_bytes < 2 ** 40 else f"{n_bytes / 2 ** 40:,.1f} TB"


def exact_labels(work: Path, n: int, seed: int, timeout: float,
                 pool: Optional[Path] = None) -> tuple:
    """(labels file or None, seconds or None, peak MB): cached in ``work`` once computed."""
    path = work / f"exact_labels_{n}_seed{seed}.npy"
    info = work / f"exact_labels_{n}_seed{seed}.json"
    if path.is_file() and info.is_file():
        saved = json.loads(info.read_text())
        return path, saved["seconds"], saved["peak_mb"], True
    args = {"n": n, "seed": seed, "labels_out": str(path)}
    if pool is not None:
        args["pool"] = str(pool)
    result = run_child("exact", args, timeout)
    if result is None:
        return None, None, None, False
    info.write_text(json.dumps(result))
    return path, result["seconds"], result["peak_mb"], False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3439,100000,1000000")
    parser.add_argument("--ari-sizes", default="3439,20000,50000")
    parser.add_argument("--exact-timeout", type=float, default=60.0,
                        help="seconds each exact spectral clustering may run (results cached)")
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                       "igpt4-selection-scale"))
    parser.add_argument("--method-sizes", default="1000000",
                        help="pool sizes the model-free selection methods are timed at")
    parser.add_argument("--methods-only", action="store_true",
                        help="time only the model-free selection methods")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return
    sys.path.insert(0, str(REPO))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"selection from cached features, {os.cpu_count()} CPU cores; work dir {work}")
    started = time.perf_counter()
    method_sizes = [int(s) for s in args.method_sizes.split(",") if s]
    if args.methods_only:
        report_methods(work, {n: make_pool(work / f"pool_{n}.safetensors", n)
                              for n in method_sizes}, method_sizes)
        print(f"\n(benchmark ran {time.perf_counter() - started:.0f} s)")
        return
    pools = {n: make_pool(work / f"pool_{n}.safetensors", n) for n in sizes}
    checkpoint = make_checkpoint(work / "selector", pools[min(sizes)])
    print(f"(pools and checkpoint ready in {time.perf_counter() - started:.0f} s: image 6 + text 6"
          f" PCA dims, 4 indicators; default-mode selector, {CONTEXT}-sample sets, 4 rounds)\n")

    print("ours: igpt4 select end to end (load, score, cluster, quota + top-k, write), "
          "fresh process each")
    print(f"{'samples':>9} {'total s':>8} {'peak MB':>8} {'cluster':>9}  stages (s)")
    ours: Dict[int, dict] = {}
    for n in sizes:
        result = run_child("select", {"pool": str(pools[n]), "checkpoint": str(checkpoint),
                                      "out": str(work / f"selected_{n}"),
                                      "clustering": "auto"}, timeout=600)
        ours[n] = result
        stages = "  ".join(f"{k} {v:.1f}" for k, v in result["stages"].items())
        print(f"{n:>9,} {result['seconds']:>8.1f} {result['peak_mb']:>8.0f} "
              f"{result['clustering']:>9}  {stages}")
    if TARGET_SIZE in ours:
        big = ours[TARGET_SIZE]
        met = big["seconds"] <= TARGET_SECONDS and big["peak_mb"] <= TARGET_MB
        print(f"target at 1M: <= {TARGET_SECONDS:.0f} s and <= {TARGET_MB / 1024:.0f} GB -> "
              f"{big['seconds']:.1f} s, {big['peak_mb'] / 1024:.2f} GB: "
              f"{'MET' if met else 'NOT MET'}")

    print("\nthe original approach, stage by stage (fresh process each, time-limited)")
    for n in sizes:
        print(f"  {n:,} samples:")
        copies = CONTEXT * (HEADS + 1) * n * n * 4  # 114 copies: per-head + averaged weights
        print(f"    scoring, original loop (pool repeated {CONTEXT}x along the batch): would "
              f"need ~{gb(copies)} of attention weights")
        one = 3 * HEADS * n * n * 4
        if one <= TARGET_MB * 2 ** 20:
            result = run_child("reference", {"pool": str(pools[n])}, args.exact_timeout)
            print("    scoring, whole pool as one sequence: " + (
                f"did not finish in {args.exact_timeout:.0f} s" if result is None else
                f"{result['seconds']:.1f} s, peak {result['peak_mb']:.0f} MB"))
        else:
            print(f"    scoring, whole pool as one sequence: would need ~{gb(one)} "
                  "(ours in reference mode chunks the queries: bounded memory, O(N^2) time)")
        if n <= 100_000:
            _, seconds, peak, cached = exact_labels(work, n, 0, args.exact_timeout, pools[n])
            print("    exact spectral clustering: " + (
                f"did not finish in {args.exact_timeout:.0f} s" if seconds is None else
                f"{seconds:.1f} s, peak {peak:.0f} MB" + (" (cached)" if cached else "")))
        else:
            print("    exact spectral clustering: not attempted (superlinear: the sparse LU of "
                  "ARPACK's shift-invert on the N x N Laplacian; see the 100k line)")
        quota = run_child("quota", {"n": n}, timeout=600)
        for kind, q in quota.items():
            print(f"    quota + top-k ({kind} ranking): Python sorts {q['loop_s']:.2f} s, "
                  f"ours {q['array_s']:.2f} s, same selection: {q['same']}")

    report_methods(work, {n: pools.get(n) or make_pool(work / f"pool_{n}.safetensors", n)
                          for n in method_sizes}, method_sizes)

    print("\nagreement of the scalable clustering with exact spectral clustering (ARI; "
          "1 = identical partitions; 2000 micro-clusters, graph on <= 100k rows)")
    reference = REPO.parent / "shared" / "reference" / "instructiongpt4"
    cases = [(int(n), None) for n in args.ari_sizes.split(",")]
    if (reference / "cc_sbu_align_test" / "full_score_data.json").is_file():
        cases.insert(0, (3439, reference))
    for n, repo in cases:
        label = "released cc_sbu_align features" if repo else f"{n:,} synthetic"
        if repo:
            labels_path = work / "exact_labels_released.npy"
            labels_seed1 = work / "exact_labels_released_seed1.npy"
            for seed, path in ((0, labels_path), (1, labels_seed1)):
                if not path.is_file():
                    code = ("import sys, numpy as np; sys.path.insert(0, %r); "
                            "from selector.scoring.reference import ReferenceRepo; "
                            "from selector.selection.clustering import spectral_clusters; "
                            "np.save(%r, spectral_clusters(ReferenceRepo(%r).pool().image, 10, "
                            "10, seed=%d))" % (str(REPO), str(path), str(repo), seed))
                    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
            seconds = None
        else:
            labels_path, seconds, _, cached = exact_labels(work, n, 0, args.exact_timeout)
            labels_seed1 = None
            if labels_path is not None and n <= 20_000:
                labels_seed1, _, _, _ = exact_labels(work, n, 1, args.exact_timeout)
        if labels_path is None:
            print(f"  {label}: exact did not finish in {args.exact_timeout:.0f} s, not measured "
                  f"(run once with --exact-timeout 3600; the labels are then cached in {work})")
            continue
        result = run_child("ari", {"n": n, "reference": str(repo) if repo else None,
                                   "exact_labels": str(labels_path),
                                   "exact_labels_seed1": str(labels_seed1) if labels_seed1
                                   else None}, timeout=600)
        aris = ", ".join(f"{r['ari']:.3f}" for r in result["scalable"])
        took = ", ".join(f"{r['seconds']:.1f}" for r in result["scalable"])
        context = (f"; exact seed 0 vs seed 1: {result['exact_seed1_ari']:.3f}"
                   if "exact_seed1_ari" in result else "")
        exact_time = f"; exact took {seconds:.0f} s" if seconds is not None else ""
        print(f"  {label}: ARI (seeds 0, 1, 2) {aris} in {took} s{context}{exact_time}")
    print(f"\n(benchmark ran {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
