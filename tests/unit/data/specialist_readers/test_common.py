"""ReadReport: the log lines and the summary, with the first places of each reason."""

from dianjing.data.specialist_readers import ReadReport


def test_report_lines_and_summary():
    rep = ReadReport(files=["a.csv"])
    for i in range(5):
        rep.rejections.add("empty text", f"a.csv:{i + 2}", "empty text")
    rep.kept = 7
    assert rep.lines() == ["read 7 examples from a.csv",
                           "rejected 5: empty text (a.csv:2, a.csv:3, a.csv:4, …)"]
    assert rep.summary()["samples"]["empty text"] == ["a.csv:2: empty text", "a.csv:3: empty text",
                                                      "a.csv:4: empty text"]


def test_rejections_and_repairs_are_separate_tallies_shown_together():
    rep = ReadReport(files=["a.csv"], kept=1)
    rep.rejections.add("empty text", "a.csv:2", "empty text: 'text' is blank")
    rep.repairs.add("label had surrounding whitespace: stripped", "a.csv:3", "' a' became 'a'")
    assert rep.rejected == {"empty text": 1} and rep.fixed == {"label had surrounding whitespace: stripped": 1}
    assert rep.samples == {"empty text": ["a.csv:2: empty text: 'text' is blank"],
                           "label had surrounding whitespace: stripped": ["a.csv:3: ' a' became 'a'"]}
    assert rep.lines() == ["read 1 example from a.csv", "rejected 1: empty text (a.csv:2)",
                           "fixed 1: label had surrounding whitespace: stripped (a.csv:3)"]
