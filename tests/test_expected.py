"""expected/: the real files load, and every malformed file is an error that names the field."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims.verdict import expected
from advclaims.verdict.stats import Verdict

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
basis = "paper"
basis_note = "Table 1"
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


@pytest.mark.project
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


def test_also_seen_verdicts_are_accepted_as_unstable():
    text = GOOD.replace('reason = "schedule too short"', 'reason = "flips between retrainings"\n'
                        'also_seen = ["inconclusive"]')
    e = expected.parse(text, paper="local_properties")["X-1"].expectation("mnist", "fast")
    assert e.also_seen == (Verdict.INCONCLUSIVE,)
    assert e.accepts("contradicted") and e.accepts("inconclusive") and not e.accepts("reproduced")
    assert not expected.parse(GOOD, paper="local_properties")["X-1"].expectation("mnist", "fast").also_seen


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
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nalso_seen = ["contradicted"]'),
     "other than 'verdict'"),
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nalso_seen = ["maybe"]'), "also_seen holds verdicts"),
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nalso_seen = "inconclusive"'), "must be a list"),
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nalso_seen = ["inconclusive", "inconclusive"]'),
     "each once"),
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nseen = ["inconclusive"]'), "unknown field"),
    (GOOD + '[claims.X-1.expect."mnist.smoke"]\nverdict = "reproduced"\nalso_seen = ["inconclusive"]\n',
     "an also_seen, needs a 'reason'"),
    (GOOD.replace('reason = "schedule too short"', 'reason = "s"\nalso_seen = ["reproduced"]'),
     r"^x\.toml: claims\.X-1\.expect\.'\*\.fast': verdict 'contradicted' with also_seen \['reproduced'\] accepts "
     "both reproduced and contradicted"),
    (GOOD.replace('reason = "too few images at smoke"', 'reason = "s"\nalso_seen = ["reproduced", "contradicted"]'),
     "accepts both reproduced and contradicted"),
    (GOOD.replace('basis = "paper"\n', ''), "missing field 'basis'"),
    (GOOD.replace('basis = "paper"', 'basis = "ours"'), "basis must be one of"),
    (GOOD.replace('basis_note = "Table 1"', 'basis_note = " "'), "basis_note must say"),
    (GOOD.replace('basis_note = "Table 1"', 'basis_note = "Table 1"\nthreshold_range = [0.5, 2.0]'),
     "a threshold the paper states has no range"),
    (GOOD.replace('basis = "paper"', 'basis = "protocol"').replace(
        'basis_note = "Table 1"', 'basis_note = "ours"\nthreshold_range = [1.5, 2.0]'), "around the threshold"),
    (GOOD + '[[claims.X-1.parameters]]\nname = "s"\ndescription = "d"\ndefault = 3.0\nvalues = [1.0, 2.0]\n'
            'basis_note = "b"\n', "the default among them"),
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


# ---------------------------------------------------------------------------------------------
# fuzzing past the first field: a valid claim with one field replaced by anything TOML can hold

toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
VALID_CLAIM = expected.tomllib.loads(GOOD)["claims"]["X-1"]
CLAIM_FIELDS = sorted(set(VALID_CLAIM) | {"protocol_note"})


@given(field=st.sampled_from(CLAIM_FIELDS), value=toml_values)
@settings(deadline=None, max_examples=300)
def test_any_value_in_any_field_of_a_valid_claim_parses_or_names_file_and_field(field, value):
    try:
        expected._parse_claim("X-1", {**VALID_CLAIM, field: value}, "local_properties", "fuzz.toml")
    except expected.ExpectedError as err:
        assert str(err).startswith("fuzz.toml: claims.X-1") and "\n" not in str(err), err


@given(index=st.integers(0, 3), key=st.sampled_from(["statistic", "description", "comparator", "threshold", "paper",
                                                      "tolerance", "verdict", "reason"]), value=toml_values)
@settings(deadline=None, max_examples=300)
def test_any_value_in_a_nested_entry_parses_or_names_file_and_field(index, key, value):
    claim = {**VALID_CLAIM, "checks": [dict(c) for c in VALID_CLAIM["checks"]],
             "values": [dict(v) for v in VALID_CLAIM["values"]],
             "expect": {k: dict(v) for k, v in VALID_CLAIM["expect"].items()}}
    entry = [claim["checks"][0], claim["values"][0], *claim["expect"].values()][index]
    entry[key] = value
    try:
        expected._parse_claim("X-1", claim, "local_properties", "fuzz.toml")
    except expected.ExpectedError as err:
        assert str(err).startswith("fuzz.toml: claims.X-1") and "\n" not in str(err), err


@pytest.mark.parametrize("broken, message", [
    (GOOD.replace('dataset = "cifar10"', 'dataset = "cifar-10"'), "paper_setting: unknown dataset 'cifar-10'"),
    (GOOD.replace('budget = "paper"', 'budget = "full"'), "paper_setting: unknown budget 'full'"),
    (GOOD.replace('title = "t"', 'title = "t"\nvalues = 3'), "values: must be a list"),
    (GOOD.replace('title = "t"', 'title = "t"\nprotocol_note = 1'), "'protocol_note' must be a str"),
])
def test_fields_that_once_passed_silently_are_errors(broken, message):
    if "values = 3" in broken:
        broken = broken[:broken.index("[[claims.X-1.values]]")] + broken[broken.index("[claims.X-1.expect"):]
    with pytest.raises(expected.ExpectedError, match=message):
        expected.parse(broken, paper="local_properties", where="x.toml")


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", None], ids=["binary", "directory"])
def test_an_unreadable_file_names_the_file(tmp_path, content):
    path = tmp_path / "curvature.toml"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(expected.ExpectedError, match=r"curvature\.toml: cannot be read as UTF-8 TOML"):
        expected.load(tmp_path)


@pytest.mark.project
def test_every_check_of_the_repository_says_where_its_threshold_comes_from():
    for spec in expected.load().values():
        for c in spec.checks:
            assert c.basis in ("paper", "protocol") and c.basis_note.strip(), (spec.id, c.statistic)
            assert c.threshold_range is None or c.basis == "protocol"


def test_protocol_parameters_and_threshold_ranges_parse():
    text = GOOD.replace('basis = "paper"', 'basis = "protocol"').replace(
        'basis_note = "Table 1"', 'basis_note = "ours"\nthreshold_range = [0.5, 2.0]')
    text += ('[[claims.X-1.parameters]]\nname = "s_max"\ndescription = "d"\ndefault = 1.0\nvalues = [0.5, 1.0, 2.0]\n'
             'basis_note = "the paper states no range"\n')
    spec = expected.parse(text, paper="curvature")["X-1"]
    assert spec.checks[0].threshold_range == (0.5, 2.0)
    assert spec.parameters[0].name == "s_max" and spec.parameters[0].values == (0.5, 1.0, 2.0)
