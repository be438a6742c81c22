"""Ray entry for the encode stage:
`ray job submit --working-dir . -- python jobs/encode.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
