"""`make bench`: every benchmark, one after the other (never two heavy ones at once on 2 cores)."""

from bench import collective_vs_individual, llm_overhead, loader, serving, spark_scaling


def main() -> None:
    serving.main()
    loader.main()
    llm_overhead.main()
    spark_scaling.main([100_000, 1_000_000, 10_000_000])
    collective_vs_individual.main([])


if __name__ == "__main__":
    main()
