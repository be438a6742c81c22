"""The model zoo: one file per model over shared bases (`base.CtrModel`, `sequential.SeqModel`)."""

from __future__ import annotations

from reki_spark.models.autoint import AutoInt
from reki_spark.models.base import CtrModel, CtrSchema, HeinSettings, KnowledgeTables
from reki_spark.models.dcnv2 import DcnV2
from reki_spark.models.deepfm import DeepFm
from reki_spark.models.din import Din
from reki_spark.models.gru4rec import Gru4Rec
from reki_spark.models.hein import Hein
from reki_spark.models.mostpop import CtrMostPop, MostPop
from reki_spark.models.sasrec import SasRec
from reki_spark.models.sequential import SeqModel, SeqSchema

# The popularity baseline trained beside every task (`training.models` lists it; nothing learned).
MOSTPOP = "mostpop"
CTR_MODELS: dict[str, type[CtrModel]] = {"din": Din, "dcnv2": DcnV2, "deepfm": DeepFm, "autoint": AutoInt}
SEQUENTIAL_MODELS: dict[str, type[SeqModel]] = {"sasrec": SasRec, "gru4rec": Gru4Rec}

__all__ = [
    "CTR_MODELS",
    "MOSTPOP",
    "SEQUENTIAL_MODELS",
    "AutoInt",
    "CtrModel",
    "CtrMostPop",
    "CtrSchema",
    "DcnV2",
    "DeepFm",
    "Din",
    "Gru4Rec",
    "Hein",
    "HeinSettings",
    "KnowledgeTables",
    "MostPop",
    "SasRec",
    "SeqModel",
    "SeqSchema",
]
