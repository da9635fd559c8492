"""cpm_lab.claims: the checked sentences of the tutorials."""


def test_claims_record_and_never_call_a_tie_a_difference(capsys):
    from cpm_lab.claims import CLAIMS, claim, exceeds, recorded

    claim("demo_tie", "0.50 beats 0.49", exceeds(0.50, 0.49, n=100), "0.50 vs 0.49 on 100")
    assert not CLAIMS["demo_tie"].holds and "does NOT hold" in capsys.readouterr().out
    claim("demo_gap", "0.9 beats 0.5", exceeds(0.9, 0.5, n=100))
    assert CLAIMS["demo_gap"].holds and "✓ holds: 0.9 beats 0.5" in capsys.readouterr().out
    assert {"demo_tie", "demo_gap"} <= {r["key"] for r in recorded()}
    claim("demo_tie", "re-run", True)                 # re-running a cell replaces its claim
    assert CLAIMS["demo_tie"].holds and CLAIMS["demo_tie"].text == "re-run"
