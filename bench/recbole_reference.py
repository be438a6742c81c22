"""RecBole's SASRec, the independent reference of bench/recbole_parity.py, trained on RecBole's own
pipeline and saved as plain weights plus RecBole's item-token order. This module imports RecBole,
torch and numpy only (no Spark), so the reference can also be trained on a machine that has just
those, e.g. a GPU box:

    python -m bench.recbole_reference --seed 1 --device cuda --out DIR [--recbole-path SITE]

RecBole is a bench-only dependency, installed apart from the product's environment
(`pip install --no-deps --target DIR recbole==1.2.1 colorlog colorama texttable tabulate thop`);
its incompatibilities with torch >= 2.6 and numpy >= 1.24 are patched here and nowhere else.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reki_spark.models.sequential import ItemScorer, score_matrix

# RecBole's own defaults for SASRec (epochs 300, stopping_step 10, batch 2048, max length 50,
# dropout 0.5/0.5), with the product's protocol: leave-one-out by time, full ranking, CE loss,
# early stopping on validation NDCG@10.
EPOCHS = 300  # RecBole's default cap; early stopping ends the runs long before
PROTOCOL = {
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "train_neg_sample_args": None,
    "loss_type": "CE",
    "valid_metric": "NDCG@10",
    "metrics": ["NDCG", "Recall"],
    "topk": [10],
    "show_progress": False,
    "worker": 0,
}


def import_recbole(path: str | None) -> Path:
    """Imports RecBole 1.2.1 beside torch 2.13 and numpy 1.26 and returns its bundled ml-100k
    interaction file, which RecBole always trains on (whatever `data_path` says)."""
    if path:
        sys.path.insert(0, path)
    removed = {
        "float": float, "int": int, "bool": bool, "long": int, "object": object, "str": str, "unicode": str,
        "complex": complex, "float_": np.float64, "complex_": np.complex128, "unicode_": np.str_,
    }  # fmt: skip
    for alias, kind in removed.items():
        if alias not in dir(np):  # numpy 2 brought np.bool and np.long back as its own types
            setattr(np, alias, kind)  # removed numpy aliases that RecBole still uses
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = type(
        "SummaryWriter", (), {"__init__": lambda self, *a, **k: None, "__getattr__": lambda self, name: _ignore}
    )
    sys.modules["torch.utils.tensorboard"] = tensorboard  # its scalars are not needed here
    torch.load = functools.partial(torch.load, weights_only=False)  # its own checkpoints
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from the command line
    import recbole.model.sequential_recommender  # noqa: F401  (sine.py included)

    torch.autograd.set_detect_anomaly(False)  # sine.py turns it on at import: ~1.5x slower
    return Path(sys.modules["recbole"].__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"


def _ignore(*args: Any, **kwargs: Any) -> None:
    """What RecBole's tensorboard calls do in these runs."""


def reference_setup(seed: int, epochs: int, device: str, checkpoints: Path) -> tuple[Any, Any, Any, Any]:
    """RecBole's config, dataset and train/valid loaders for one seed, as its quick start builds them."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    settings = {
        **PROTOCOL,
        "seed": seed,
        "epochs": epochs,
        "device": device,
        "use_gpu": device != "cpu",
        "checkpoint_dir": str(checkpoints),
    }
    config = Config(model="SASRec", dataset="ml-100k", config_dict=settings)
    init_seed(seed, config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data


def fit(seed: int, epochs: int, device: str, out: Path, work: Path, deadline_seconds: float) -> dict[str, Any]:
    """Trains RecBole's SASRec until its early stopping (or the deadline) and saves the best
    validation epoch's weights with the item-token order they index."""
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer

    config, dataset, train_data, valid_data = reference_setup(seed, epochs, device, work / f"seed{seed}")

    class TimedTrainer(Trainer):
        """Counts epochs and validation scores, and stops at the deadline."""

        def _train_epoch(self, *args: Any, **kwargs: Any) -> Any:
            if time.perf_counter() - started > deadline_seconds:
                raise TimeoutError
            return super()._train_epoch(*args, **kwargs)

        def _valid_epoch(self, *args: Any, **kwargs: Any) -> Any:
            score, result = super()._valid_epoch(*args, **kwargs)
            valid_scores.append(float(score))
            return score, result

    valid_scores: list[float] = []
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = TimedTrainer(config, model)
    started = time.perf_counter()
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        stopped_by = "early stopping" if len(valid_scores) < epochs else "epoch limit"
    except TimeoutError:
        stopped_by = "deadline"
    seconds = time.perf_counter() - started
    best = torch.load(trainer.saved_model_file, map_location="cpu")
    weights = out / f"recbole_sasrec_seed{seed}.pt"
    torch.save({"state_dict": best["state_dict"], "item_tokens": list(dataset.field2id_token["item_id"])}, weights)
    return {
        "seed": seed,
        "device": str(config["device"]),
        "epochs_trained": len(valid_scores),
        "best_epoch": int(np.argmax(valid_scores)) + 1,
        "best_valid_ndcg@10": max(valid_scores),
        "stopped_by": stopped_by,
        "seconds": seconds,
        "seconds_per_epoch": seconds / len(valid_scores),
        "weights": weights.name,
    }


class RecBoleScores(nn.Module):
    """A trained RecBole SASRec behind the product's `item_scorer(batch)`: the product's item
    indices in, scores over the product's item indices out."""

    def __init__(self, weights: Path, seed: int, item_tokens: list[str], work: Path) -> None:
        super().__init__()
        from recbole.model.sequential_recommender import SASRec

        config, dataset, train_data, _ = reference_setup(seed, 1, "cpu", work)
        saved = torch.load(weights, map_location="cpu")
        if saved["item_tokens"] != list(dataset.field2id_token["item_id"]):
            raise ValueError(f"{weights}: RecBole's item order differs from the one it was trained with")
        self.model = SASRec(config, train_data.dataset)
        self.model.load_state_dict(saved["state_dict"])
        self.model.eval()
        self.max_length = config["MAX_ITEM_LIST_LENGTH"]
        internal = dataset.token2id(dataset.iid_field, item_tokens[1:])  # index 0 is padding
        self.to_recbole = torch.as_tensor(np.concatenate([[0], internal]), dtype=torch.long)

    @torch.no_grad()
    def item_scorer(self, batch: dict[str, torch.Tensor]) -> ItemScorer:
        from recbole.data.interaction import Interaction

        sequence = batch["sequence"]
        lengths = (sequence > 0).sum(1).clamp(max=self.max_length)
        left_aligned = torch.zeros(len(sequence), self.max_length, dtype=torch.long)
        for row, (items, length) in enumerate(zip(sequence, lengths, strict=True)):
            left_aligned[row, : int(length)] = self.to_recbole[items[items > 0]][-self.max_length :]
        interaction = Interaction({self.model.ITEM_SEQ: left_aligned, self.model.ITEM_SEQ_LEN: lengths})
        return score_matrix(self.model.full_sort_predict(interaction)[:, self.to_recbole])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/recbole-work", help="RecBole's own checkpoints")
    parser.add_argument("--deadline-seconds", type=float, default=float("inf"))
    parser.add_argument("--recbole-path", default=None)
    args = parser.parse_args()
    import_recbole(args.recbole_path)
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = fit(args.seed, args.epochs, args.device, out, Path(args.work), args.deadline_seconds)
    (out / f"recbole_sasrec_seed{args.seed}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
