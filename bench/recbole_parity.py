"""Reference parity: the product's SASRec against RecBole's SASRec (an independent implementation,
bench/recbole_reference.py) on the same MovieLens-100k leave-one-out split, with MostPop beside them.
RecBole trains on its own data pipeline (its bundled ml-100k atomic file, checked byte-identical to
the one the product ingests); its best-validation weights are then scored by the product's
evaluation code on the product's test rows (same candidates, same exclusion of seen items, same tie
rule, same 99 sampled negatives), so only the models differ.

Both train to convergence: early stopping on validation NDCG@10 with patience 10 (RecBole's
`stopping_step` default, the product's config), each with its own defaults otherwise. RecBole's
SASRec re-encodes every training prefix (about 25x the product's work per epoch), which on 2 CPU
cores is ~160 s an epoch; its convergence runs may therefore come from another machine
(`--reference DIR` of `python -m bench.recbole_reference` outputs, e.g. trained on a GPU). The
seconds-per-epoch ratio is always measured here, like for like: `--timing-epochs` RecBole epochs
on this machine's CPU with the same 2 threads as the product.

    python -m bench.recbole_parity --ml100k data/ml-100k --recbole-path DIR \
        [--reference DIR] --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, Measure, save
from bench.recbole_reference import EPOCHS, RecBoleScores, fit, import_recbole
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.lake import VOCAB, Lake
from reki_spark.models import SeqSchema
from reki_spark.session import get_spark
from reki_spark.training.data import cardinalities, sequence_targets
from reki_spark.training.feeding import SplitFiles
from reki_spark.training.loop import evaluate
from reki_spark.training.train import part_files, train

METRICS = ["ndcg@10_full", "recall@10_full", "ndcg@10_sampled99", "recall@10_sampled99"]


def reference_results(
    args: argparse.Namespace, item_tokens: list[str], schema: SeqSchema, test: list[str]
) -> list[dict]:
    """RecBole's test metrics per seed, from weights trained elsewhere or trained here."""
    folder = Path(args.reference) if args.reference else Path(args.work) / "recbole"
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        fitted = folder / f"recbole_sasrec_seed{seed}.json"
        if not fitted.exists():
            fitted.write_text(json.dumps(fit(seed, EPOCHS, "cpu", folder, folder / "checkpoints", float("inf"))))
        run = json.loads(fitted.read_text())
        with tempfile.TemporaryDirectory() as work:
            scorer = RecBoleScores(folder / run["weights"], seed, item_tokens, Path(work))
        job = types.SimpleNamespace(
            task="sequential",
            schema=schema,
            splits=SplitFiles({"test": test}, 1024),
            eval_item_chunk=8192,
            seed=seed,
            keyed_by=None,
        )
        results.append({"model": "recbole-sasrec", **run, **evaluate(job, scorer, "test")})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml100k", default="data/ml-100k", help="where `reki download` puts it")
    parser.add_argument("--work", default="/tmp/reki-bench-recbole")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--recbole-path", default=None)
    parser.add_argument("--reference", default=None, help="outputs of bench.recbole_reference, one per seed")
    parser.add_argument("--timing-epochs", type=int, default=1)
    args = parser.parse_args()
    bundled = import_recbole(args.recbole_path)
    if bundled.read_bytes() != (Path(args.ml100k) / "ml-100k.inter").read_bytes():
        raise SystemExit(
            f"{bundled} differs from {args.ml100k}/ml-100k.inter (RecBole's atomic files are needed): "
            "the two sides would not train on the same data"
        )
    folder = Path(args.work)
    config = load_config(
        "jobs/configs/movielens-100k.yaml",
        [
            f"dataset.path={args.ml100k}",
            f"lake={folder / 'lake'}",
            f"output={folder / 'run'}",
            "training.models=[sasrec, mostpop]",
            "training.knowledge=[none]",
            f"training.seeds={json.dumps(args.seeds)}",
            "tracking.enabled=false",
        ],
    )
    shutil.rmtree(folder / "run", ignore_errors=True)  # trained afresh: its seconds per epoch are measured
    spark = get_spark(config)
    lake = Lake(spark, config.lake)
    if not (folder / "lake" / "sequences").exists():
        ingest(spark, config)
        build_features(spark, config)
    product = train(spark, config)
    vocab = lake.read(VOCAB)
    length = config.features.sequence_max_length
    sizes = cardinalities(vocab)
    schema = SeqSchema(items=sizes["item_id"], users=sizes["user_id"], max_length=length)
    tokens = vocab.where("field = 'item_id'").orderBy("index").select("value").toPandas()["value"].tolist()
    test = part_files(sequence_targets(lake, vocab, length, "test"), folder / "test", 2)
    reference = reference_results(args, ["", *tokens], schema, test)
    report(product, reference, cpu_epoch_seconds(args.timing_epochs), args, length)


def cpu_epoch_seconds(epochs: int) -> float:
    """RecBole's seconds per epoch on this machine's CPU, with the product's 2 threads."""
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as work:
        return fit(1, epochs, "cpu", Path(work), Path(work), float("inf"))["seconds_per_epoch"]


def report(
    product: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    recbole_cpu_seconds: float,
    args: argparse.Namespace,
    length: int,
) -> None:
    ours = {r["seed"]: r for r in product if r["model"] == "sasrec"}
    popular = {r["seed"]: r for r in product if r["model"] == "mostpop"}
    measures = [
        Measure(
            f"SASRec product / RecBole {metric}",
            ">= 1.0",
            [ours[r["seed"]][metric] / r[metric] for r in reference],
            {"product": [ours[r["seed"]][metric] for r in reference], "recbole": [r[metric] for r in reference]},
        )
        for metric in METRICS
    ]
    measures += [
        Measure(
            f"{name} / MostPop ndcg@10_full",
            ">= 2.0",
            [r["ndcg@10_full"] / popular[r["seed"]]["ndcg@10_full"] for r in runs],
        )
        for name, runs in [("SASRec product", list(ours.values())), ("SASRec RecBole", reference)]
    ]
    product_seconds = [ours[s]["train_seconds"] / max(1, ours[s]["epochs_trained"]) for s in ours]
    measures.append(
        Measure(
            "seconds per epoch on 2 CPU threads, product / RecBole",
            "<= 1.0",
            [seconds / recbole_cpu_seconds for seconds in product_seconds],
            {"product": product_seconds, "recbole": recbole_cpu_seconds, "recbole_epochs_timed": args.timing_epochs},
        )
    )
    devices = sorted({r["device"] for r in reference})
    notes = (
        f"ML-100k leave-one-out, seeds {args.seeds}, both to convergence (early stopping on validation "
        "NDCG@10, patience 10; the best validation epoch scored), both scored by the product's evaluation "
        "code on the product's test rows. RecBole 1.2.1: its SASRec defaults (max length 50, hidden and "
        "attention dropout 0.5, batch 2048, lr 1e-3, CE over all items), trained on "
        f"{', '.join(devices)}; product: jobs/configs/movielens-100k.yaml (max length {length}, hidden dropout "
        "0.5, attention dropout 0, batch 32 windows, full softmax), on 2 CPU threads. Seconds per epoch "
        "include each side's validation pass and are both measured on this machine's 2 CPU threads."
    )
    path = save("recbole_parity", measures, notes)
    detail = RESULTS / "recbole_parity_runs.json"
    detail.write_text(json.dumps({"product": product, "recbole": reference}, indent=2, default=float) + "\n")
    print(f"{path}\n{statistics.median(measures[0].ratios):.3f} NDCG@10 ratio (median)")


if __name__ == "__main__":
    main()
