"""Ray entry for the extract stage:
`ray job submit --working-dir . -- python jobs/extract.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
