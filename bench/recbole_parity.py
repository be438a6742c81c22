"""Reference parity: the product's SASRec against RecBole's SASRec (an independent implementation)
on the same MovieLens-100k leave-one-out split, with MostPop beside them. RecBole trains on its own
data pipeline (its bundled ml-100k atomic file, byte-identical to ours); its trained model is then
scored by the product's evaluation code on the product's valid/test rows (same candidates, same
exclusion of seen items, same tie rule, same 99 sampled negatives), so only the models differ.

Both train for the same number of epochs (an epoch: every transition of every training prefix is
a target once, in RecBole as prefixes, in the product as windows) and are scored at their best
validation epoch. RecBole is a bench-only dependency, installed apart from the product's
environment (`pip install --no-deps --target DIR recbole==1.2.1 colorlog colorama texttable
tabulate thop`, DIR on PYTHONPATH or `--recbole-path`); its incompatibilities with torch >= 2.6 and
numpy >= 1.24 are patched in this script only.

    python -m bench.recbole_parity --ml100k ../shared/data/movielens_100k --epochs 30 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import RESULTS, Measure, save
from reki_spark.config import load_config
from reki_spark.data.ingest import ingest
from reki_spark.features import build_features
from reki_spark.lake import VOCAB, Lake
from reki_spark.models import SeqSchema
from reki_spark.session import get_spark
from reki_spark.training.data import cardinalities, seen_items, sequence_targets
from reki_spark.training.loop import evaluate
from reki_spark.training.train import train

METRICS = ["ndcg@10_full", "recall@10_full", "ndcg@10_sampled99", "recall@10_sampled99"]


def import_recbole(path: str | None) -> types.ModuleType:
    """RecBole 1.2.1 beside torch 2.13 and numpy 1.26, patched here and nowhere else."""
    if path:
        sys.path.insert(0, path)
    for alias, kind in {"float": float, "int": int, "bool": bool, "long": int, "object": object}.items():
        setattr(np, alias, kind)  # removed numpy aliases that RecBole still uses
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = type("SummaryWriter", (), {"__init__": lambda self, *a, **k: None})
    sys.modules["torch.utils.tensorboard"] = tensorboard  # imported, unused in these runs
    torch.load = functools.partial(torch.load, weights_only=False)  # its own checkpoints
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from the command line
    import recbole.quick_start  # noqa: F401  (imports every model, sine.py included)

    torch.autograd.set_detect_anomaly(False)  # sine.py turns it on at import: ~1.5x slower
    return sys.modules["recbole"]


class RecBoleScores(nn.Module):
    """A trained RecBole sequential model behind the product's `scores(sequence, users)`: the
    product's item indices in, scores over the product's item indices out."""

    def __init__(self, model: Any, dataset: Any, item_tokens: list[str], max_length: int) -> None:
        super().__init__()
        self.model, self.max_length = model, max_length
        internal = dataset.token2id(dataset.iid_field, item_tokens[1:])  # index 0 is padding
        self.to_recbole = torch.as_tensor(np.concatenate([[0], internal]), dtype=torch.long)

    @torch.no_grad()
    def scores(self, sequence: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        from recbole.data.interaction import Interaction

        lengths = (sequence > 0).sum(1).clamp(max=self.max_length)
        right_aligned = torch.zeros(len(sequence), self.max_length, dtype=torch.long)
        for row, (items, length) in enumerate(zip(sequence, lengths, strict=True)):
            recent = self.to_recbole[items[items > 0]][-self.max_length :]
            right_aligned[row, : int(length)] = recent
        interaction = Interaction({self.model.ITEM_SEQ: right_aligned, self.model.ITEM_SEQ_LEN: lengths})
        recbole_scores = self.model.full_sort_predict(interaction)
        return recbole_scores[:, self.to_recbole]


def recbole_run(
    seed: int, epochs: int, folder: Path, item_tokens: list[str], schema: SeqSchema, split: dict
) -> dict[str, Any]:
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict={
            "seed": seed,
            "epochs": epochs,
            "stopping_step": epochs,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "train_neg_sample_args": None,
            "loss_type": "CE",
            "valid_metric": "NDCG@10",
            "metrics": ["NDCG", "Recall"],
            "topk": [10],
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "checkpoint_dir": str(folder / "recbole" / f"seed{seed}"),
            "data_path": str(folder / "recbole-data"),
            "worker": 0,
        },
    )
    init_seed(seed, config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    started = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    seconds = time.perf_counter() - started
    trainer.resume_checkpoint(trainer.saved_model_file)  # the best validation epoch
    model.eval()
    scorer = RecBoleScores(model, dataset, item_tokens, config["MAX_ITEM_LIST_LENGTH"])
    job = types.SimpleNamespace(task="sequential", schema=schema, seen=split["seen"], eval_batch_size=1024, seed=seed)
    return {
        "model": "recbole-sasrec",
        "seed": seed,
        **evaluate(job, scorer, split["test"], "test"),
        "epochs_trained": epochs,
        "seconds_per_epoch": seconds / epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml100k", default="../shared/data/movielens_100k")
    parser.add_argument("--work", default="/tmp/reki-bench-recbole")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recbole-path", default=None)
    args = parser.parse_args()
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
            f"training.sasrec.epochs={args.epochs}",
            f"training.sasrec.patience={args.epochs}",
        ],
    )
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
    split = {"test": sequence_targets(lake, vocab, length, "test").toPandas(), "seen": seen_items(lake, vocab)}
    import_recbole(args.recbole_path)
    reference = [recbole_run(seed, args.epochs, folder, ["", *tokens], schema, split) for seed in args.seeds]
    report(product, reference, args)


def report(product: list[dict[str, Any]], reference: list[dict[str, Any]], args: argparse.Namespace) -> None:
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
    measures.append(
        Measure(
            "SASRec product / MostPop ndcg@10_full",
            ">= 2.0",
            [ours[s]["ndcg@10_full"] / popular[s]["ndcg@10_full"] for s in ours],
        )
    )
    seconds = {
        "product": [ours[s]["train_seconds"] / max(1, ours[s]["epochs_trained"]) for s in ours],
        "recbole": [r["seconds_per_epoch"] for r in reference],
    }
    measures.append(
        Measure(
            "seconds per epoch, product / RecBole",
            "<= 1.0",
            [p / r for p, r in zip(seconds["product"], seconds["recbole"], strict=True)],
            seconds,
        )
    )
    notes = (
        f"ML-100k leave-one-out, {args.epochs} epochs each (best validation epoch scored), seeds {args.seeds}; "
        "both scored by the product's evaluation code on the product's test rows. RecBole: its SASRec "
        "defaults (max length 50, hidden and attention dropout 0.5, batch 2048, CE); product: "
        "jobs/configs/movielens-100k.yaml (max length 200, attention dropout 0, batch 128). Seconds per "
        "epoch include each side's validation pass; both on 2 CPU threads."
    )
    path = save("recbole_parity", measures, notes)
    detail = RESULTS / "recbole_parity_runs.json"
    detail.write_text(json.dumps({"product": product, "recbole": reference}, indent=2, default=float) + "\n")
    print(f"{path}\n{statistics.median(measures[0].ratios):.3f} NDCG@10 ratio (median)")


if __name__ == "__main__":
    main()
