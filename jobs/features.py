"""spark-submit entry for the features stage: `spark-submit jobs/features.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))
