"""The one SparkSession factory. Local runs get a session sized for a small machine; under
spark-submit (or any already-running Spark) the cluster's settings are kept and only Delta's
SQL extension and catalog, and the storage layer's Hadoop settings, are added."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from reki_spark import console, storage
from reki_spark.config import RekiConfig

DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a JVM gateway already listening.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def local_settings(config: RekiConfig) -> dict[str, str]:
    spark = config.spark
    return {
        "spark.driver.memory": spark.driver_memory,
        "spark.driver.maxResultSize": spark.max_result_size,
        "spark.sql.autoBroadcastJoinThreshold": spark.broadcast_threshold,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.ui.enabled": str(spark.ui).lower(),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta's default of 50 snapshot partitions makes every small-table read slow locally.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        "spark.sql.debug.maxToStringFields": "200",
        **console.spark_settings(),
    }


def get_spark(config: RekiConfig) -> SparkSession:
    builder = SparkSession.builder.appName(config.spark.app_name)
    if not launched_by_spark_submit():
        _require_delta_jars()
        # PySpark 3.5 starts its Python workers with $PYSPARK_PYTHON (else a bare `python3`),
        # whatever spark.pyspark.python says: without this, `.venv/bin/reki` run without an
        # activated venv hands every UDF to the system Python.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = builder.master(config.spark.master)
        for key, value in local_settings(config).items():
            builder = builder.config(key, value)
    hadoop = storage.hadoop_settings(config.storage.settings())
    for key, value in {**DELTA_SETTINGS, **hadoop}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    # An already-running context (spark-submit) ignores the builder's spark.hadoop.* values: set
    # them on its Hadoop configuration, which every file read and write ships to the executors.
    hadoop_conf = session.sparkContext._jsc.hadoopConfiguration()
    for key, value in hadoop.items():
        hadoop_conf.set(key.removeprefix("spark.hadoop."), value)
    return session


def _require_delta_jars() -> None:
    from reki_spark.jars import installed_delta_jars

    if not installed_delta_jars() and "io.delta" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        raise RuntimeError(
            "Delta Lake jars are missing from pyspark/jars: run `make setup` "
            "(or `python -m reki_spark.jars --version 3.3.3`)"
        )
