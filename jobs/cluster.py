"""spark-submit entry for the cluster stage: `spark-submit jobs/cluster.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["cluster", *sys.argv[1:]]))
