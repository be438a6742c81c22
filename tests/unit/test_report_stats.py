"""The report's statistics: Welch's t-test and its 95% interval decide better / worse / no
difference shown, over at least five seeds; one standard deviation is not enough."""

import math

import pytest
from scipy import stats

from reki_spark.evaluation.report import comparisons, summarize, welch

# DCNv2 on ML-100k, collective vs none, from the earlier 3-seed run: beyond one std, yet p ~ 0.1.
COLLECTIVE = [0.692658, 0.690850, 0.691655]
NONE = [0.691226, 0.688506, 0.689005]


def test_a_gain_beyond_one_std_but_not_significant_is_no_difference():
    result = welch(COLLECTIVE, NONE)
    assert 0.05 < result.p_value < 0.2
    assert result.verdict == "no difference shown"
    assert result.low < 0 < result.high


def test_clear_differences_are_called_both_ways():
    high, low = [0.80, 0.81, 0.79, 0.80, 0.805], [0.70, 0.71, 0.69, 0.70, 0.705]
    better, worse = welch(high, low), welch(low, high)
    assert better.verdict == "better" and worse.verdict == "worse"
    assert better.low > 0 and worse.high < 0
    assert better.p_value == pytest.approx(stats.ttest_ind(high, low, equal_var=False).pvalue)
    assert better.high - better.difference == pytest.approx(better.difference - better.low)


def test_a_clear_difference_on_three_seeds_is_not_called():
    result = welch([0.80, 0.81, 0.79], [0.70, 0.71, 0.69])
    assert result.p_value < 0.01 and result.verdict.startswith("not called")


def test_one_seed_gives_no_test():
    result = welch([0.8], [0.7])
    assert math.isnan(result.p_value) and result.verdict == "no difference shown"


def test_report_rows_compare_with_none_and_mostpop():
    records = [
        {"task": "sequential", "model": model, "knowledge": knowledge, "seed": seed, **metrics}
        for seed in (1, 2, 3, 4, 5)
        for model, knowledge, value in [
            ("sasrec", "none", 0.10 + seed * 1e-3),
            ("sasrec", "collective", 0.12 + seed * 1e-3),
            ("mostpop", "none", 0.04),
        ]
        for metrics in [
            {"ndcg@10_full": value, "recall@10_full": value, "ndcg@10_sampled99": value, "recall@10_sampled99": value}
        ]
    ]
    summary = summarize(records)
    primary = summary[summary["metric"] == "ndcg@10_full"].set_index(["model", "knowledge"])
    assert primary.loc[("sasrec", "none"), "vs_mostpop"] == pytest.approx(0.103 / 0.04)
    (row,) = comparisons(summary).itertuples()
    assert row.knowledge == "collective" and row.comparison.verdict == "better"


def _ctr_records(means: dict[str, float]) -> list[dict]:
    return [
        {"task": "ctr", "model": "din", "knowledge": knowledge, "seed": seed, "auc": mean + seed * 1e-4, "logloss": 0.5}
        for seed in (1, 2, 3, 4, 5)
        for knowledge, mean in means.items()
    ]


CONTROLS = {"shuffled": 0.70, "random_vectors": 0.70, "cluster_only": 0.70, "collective_plus_ids": 0.72}


@pytest.mark.parametrize(
    ("changed", "shown"),
    [
        ({}, True),
        ({"random_vectors": 0.72}, False),  # meaningless vectors per group do as well: membership, not text
        ({"cluster_only": 0.72}, False),  # the text adds nothing beside the group codes
        ({"shuffled": 0.72}, False),
    ],
)
def test_knowledge_counts_as_the_llms_only_when_all_three_text_tests_come_out_better(changed, shown):
    from reki_spark.evaluation.report import llm_verdict

    summary = summarize(_ctr_records({"none": 0.69, "collective": 0.72, **CONTROLS, **changed}))
    line, count = llm_verdict(summary)
    assert ("an effect of the LLM's text is shown." in line) == shown
    assert "`collective_plus_ids` vs `cluster_only` " in line
    assert count.endswith("over the 3 tests of the LLM's text above.")


def test_holm_multiplies_the_smallest_p_by_the_test_count_and_keeps_the_order():
    from reki_spark.evaluation.report import holm

    assert holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)
    assert holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])


def test_a_difference_significant_alone_is_not_after_holm():
    """p between 0.05 / 3 and 0.05 on each of three tests: better alone, not once corrected for three."""
    from reki_spark.evaluation.report import llm_verdict

    control = [0.700, 0.706, 0.694, 0.703, 0.697]
    text = [0.708, 0.714, 0.702, 0.711, 0.705]
    series = {"none": [0.69] * 5, "collective": text, "collective_plus_ids": text}
    series |= {name: control for name in ("shuffled", "random_vectors", "cluster_only")}
    records = [
        {"task": "ctr", "model": "din", "knowledge": k, "seed": seed, "auc": v, "logloss": 0.5}
        for k, values in series.items()
        for seed, v in enumerate(values, 1)
    ]
    alone = welch(text, control)
    assert alone.verdict == "better" and 0.05 / 3 < alone.p_value < 0.05
    line, _ = llm_verdict(summarize(records))
    assert "is not shown" in line and "Holm" in line


def test_another_llms_collective_set_is_held_to_the_same_controls():
    from reki_spark.evaluation.report import llm_verdict

    means = {"none": 0.69, "collective": 0.72, "collective_qwen05": 0.70, **CONTROLS}
    lines = llm_verdict(summarize(_ctr_records(means)))
    assert [line.split("`")[1] for line in lines[:2]] == ["collective", "collective_qwen05"]
    assert lines[0].endswith("is shown.") and not lines[1].endswith("is shown.")
    assert lines[2].endswith("over the 6 tests of the LLM's text above.")


def test_a_collective_set_on_its_own_groups_is_held_to_its_own_controls():
    from reki_spark.evaluation.report import llm_verdict

    means = {"none": 0.69, "collective": 0.72, **CONTROLS, "collective_smollm2": 0.72, "cluster_only_smollm2": 0.70}
    line = llm_verdict(summarize(_ctr_records(means)))[1]
    assert "`collective_smollm2` vs `shuffled_smollm2`: not trained" in line
    assert "`collective_plus_ids_smollm2` vs `cluster_only_smollm2`: not trained" in line
    assert "vs `cluster_only` " not in line and line.endswith("after Holm).")


def test_the_headline_names_the_best_model_its_ratio_to_mostpop_and_the_knowledge_test():
    from reki_spark.evaluation.report import headline

    records = _ctr_records({"none": 0.70, "collective": 0.75})
    records += [{"task": "ctr", "model": "mostpop", "knowledge": "none", "seed": 1, "auc": 0.60, "logloss": 0.6}]
    line = headline(summarize(records))
    assert line.startswith("best ctr model din (collective): auc 0.7503 = 1.25 x MostPop (0.6000)")
    assert "collective vs none +0.0500 (p = " in line and line.endswith(": better)")
    one_seed = [r for r in records if r["seed"] == 1]
    assert headline(summarize(one_seed)).endswith("collective vs none +0.0500 (one seed: no test)")


def test_the_headline_of_runs_without_a_value_says_so_instead_of_failing():
    from reki_spark.evaluation.report import headline

    records = [{"task": "ctr", "model": "din", "knowledge": "none", "seed": 1, "auc": math.nan, "logloss": 0.5}]
    records += [{"task": "ctr", "model": "mostpop", "knowledge": "none", "seed": 1, "auc": 0.6, "logloss": 0.6}]
    assert headline(summarize(records)) == "ctr: no learned model has a auc value (MostPop only)"


def test_the_tables_script_prints_each_arm_per_backbone_and_flags_mixed_commits():
    from bench.knowledge_tables import tables

    records = _ctr_records({"none": 0.69, "collective": 0.72})
    for record in records:
        record |= {"commit": "abc", "config_hash": "f00"}
    other_backbone = [{**r, "model": "dcnv2", "commit": "bcd", "config_hash": "e11"} for r in records]
    text = "\n".join(tables(records + other_backbone))
    assert "| collective | 0.7203 ± 0.0002 (5) | +4.35%, " in text and "warning" not in text
    assert "- dcnv2 commit: `bcd` (10 runs)" in text
    records[0]["commit"] = "def"
    assert "**warning: the din runs do not share one known commit**" in "\n".join(tables(records + other_backbone))
