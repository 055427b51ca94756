"""`adt_tf.evaluation.suites`: the suites as documented."""



from adt_tf.evaluation.suites import CATALOGUE, SUITES, resolve_suite


def test_suites_are_as_documented():
    assert SUITES["quick"] == ("pgd20",)
    assert SUITES["autoattack"] == ("apgd_ce", "apgd_t", "fab_t", "square")
    assert SUITES["full"] == SUITES["paper"] + ("fea_distinct", "spsa512") + SUITES["autoattack"]
    paper = {CATALOGUE[n].attack for n in SUITES["paper"]}
    assert paper == {"fgsm", "pgd", "mim", "cw", "fea", "spsa", "transfer", "exp", "exp_am",
                     "imp_am"}
    assert CATALOGUE["pgd100"].params["steps"] == 100
    assert CATALOGUE["square"].params["num_queries"] == 5000
    assert CATALOGUE["fea"].params["num_targets"] == 200
    # The paper suite's FeaAttack and SPSA are the authors' scripts'; ours stay in `full`.
    assert CATALOGUE["fea"].params["random_start"] and CATALOGUE["fea"].params[
        "with_replacement"]
    assert CATALOGUE["spsa"].params["samples"] == 128  # samples_per_draw=256 evaluations
    assert not CATALOGUE["spsa"].params["random_start"]
    assert CATALOGUE["spsa512"].params["samples"] == 256
    assert not CATALOGUE["fea_distinct"].params["with_replacement"]
    assert resolve_suite("paper", {"fea": {"num_targets": 20}})[5].display_label == \
        "FeaAttack (20 targets)"
