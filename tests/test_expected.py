"""expected/: the real files load, and every malformed file is an error that names the field."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims import expected
from advclaims.stats import Verdict

GOOD = """
[claims.X-1]
title = "t"
source = "Table 9"
paper_setting = { dataset = "cifar10", budget = "paper" }
[[claims.X-1.checks]]
statistic = "s"
description = "d"
comparator = ">"
threshold = 1.0
[[claims.X-1.values]]
statistic = "v"
description = "d"
paper = 0.5
tolerance = 0.1
[claims.X-1.expect."fashion_mnist.smoke"]
verdict = "inconclusive"
reason = "too few images at smoke"
[claims.X-1.expect."*.fast"]
verdict = "contradicted"
reason = "schedule too short"
"""


def test_the_repository_expected_files_load():
    catalogue = expected.load()
    assert {"LP-7", "LP-8"} <= set(catalogue)
    assert all(spec.checks for spec in catalogue.values())


def test_a_good_file_parses_and_expectations_resolve_most_specific_first():
    spec = expected.parse(GOOD, paper="local_properties")["X-1"]
    assert spec.expectation("fashion_mnist", "smoke").verdict is Verdict.INCONCLUSIVE
    assert spec.expectation("mnist", "fast").verdict is Verdict.CONTRADICTED
    assert spec.expectation("mnist", "smoke").verdict is Verdict.REPRODUCED
    assert spec.in_paper_setting("cifar10", "paper") and not spec.in_paper_setting("cifar10", "fast")


@pytest.mark.parametrize("broken, message", [
    (GOOD.replace('comparator = ">"', 'comparator = "=>"'), "comparator"),
    (GOOD.replace('threshold = 1.0', ''), "missing field 'threshold'"),
    (GOOD.replace('threshold = 1.0', 'threshold = "one"'), "finite number"),
    (GOOD.replace('reason = "too few images at smoke"', ''), "needs a 'reason'"),
    (GOOD.replace('"fashion_mnist.smoke"', '"fmnist.smoke"'), "unknown dataset 'fmnist'"),
    (GOOD.replace('"*.fast"', '"*.quick"'), "unknown budget 'quick'"),
    (GOOD.replace('verdict = "inconclusive"', 'verdict = "maybe"'), "verdict must be one of"),
    (GOOD.replace('tolerance = 0.1', 'tolerance = -0.1'), "tolerance must be >= 0"),
    (GOOD.replace('title = "t"', ''), "missing field 'title'"),
    ("[claims.X-1]\ntitle='t'\nsource='s'\n", "at least one"),
    ("claims = 3", "needs a"),
    ("[claims.X-1\n", "not valid TOML"),
])
def test_malformed_files_name_the_problem(broken, message):
    with pytest.raises(expected.ExpectedError, match=message):
        expected.parse(broken, paper="local_properties", where="x.toml")


def test_a_claim_defined_in_two_files_is_an_error(tmp_path):
    (tmp_path / "curvature.toml").write_text(GOOD)
    (tmp_path / "local_properties.toml").write_text(GOOD)
    with pytest.raises(expected.ExpectedError, match="also defined"):
        expected.load(tmp_path)


def test_an_unknown_paper_file_is_an_error(tmp_path):
    (tmp_path / "other_paper.toml").write_text(GOOD)
    with pytest.raises(expected.ExpectedError, match="file name must be one of"):
        expected.load(tmp_path)


toml_text = st.text(alphabet=st.sampled_from(list('[]."=abcXLP-1 \n>0123<#sctv')), max_size=200)


@given(toml_text)
@settings(deadline=None, max_examples=200)
def test_arbitrary_text_either_parses_or_raises_expected_error(text):
    try:
        expected.parse(text, paper="local_properties")
    except expected.ExpectedError:
        pass


@given(st.dictionaries(st.sampled_from(["title", "source", "checks", "values", "expect", "paper_setting"]),
                       st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))))
@settings(deadline=None, max_examples=200)
def test_wrongly_typed_claim_tables_raise_expected_error_only(table):
    import tomllib  # noqa: F401  (parse goes through the same path as files)
    try:
        expected._parse_claim("X-1", table, "local_properties", "fuzz.toml")
    except expected.ExpectedError:
        pass


def test_a_variant_key_overrides_its_dataset_and_budget():
    text = GOOD + '''
[claims.X-1.expect."mnist.smoke.wrn28_10"]
verdict = "contradicted"
reason = "WRN only"
'''
    spec = expected.parse(text, paper="local_properties")["X-1"]
    assert spec.expectation("mnist", "smoke", ("wrn28_10",)).verdict is Verdict.CONTRADICTED
    assert spec.expectation("mnist", "smoke", ("vgg16",)).verdict is Verdict.REPRODUCED
    assert spec.expectation("mnist", "smoke").verdict is Verdict.REPRODUCED


def test_a_variant_key_with_a_wildcard_is_an_error():
    text = GOOD.replace('"*.fast"', '"*.fast.vgg16"')
    with pytest.raises(expected.ExpectedError, match="no '\\*'"):
        expected.parse(text, paper="local_properties")
