"""`mlqueue show` reads at a glance: a summary by default, the traceback once, the log tail labelled."""

from __future__ import annotations

from datetime import UTC, datetime

from mlqueue import summary

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TRACEBACK = "Traceback (most recent call last):\n  File \"nn.py\", line 3, in run\nValueError: no column 'con_lott'"


def _order(**extra: object) -> dict:
    return {"jobId": "65f0c0ffee0123456789abcd", "state": "failed", "attempts": 1, "worker": "w1@vm",
            "createdDate": AT, "updatedDate": AT, "scriptName": "nn",
            "history": [{"at": AT, "to": s, "by": "w1", "why": s} for s in ("unassigned", "running", "failed")],
            "log": [{"line": f"epoch {i}"} for i in range(30)], **extra}


def test_a_failed_job_shows_its_traceback_once_and_a_labelled_log_tail() -> None:
    outcome = {"status": 500, "reason": "error", "message": "ValueError: no column 'con_lott'", "loss": None,
               "error": {"type": "ValueError", "message": "no column 'con_lott'", "traceback": TRACEBACK},
               "durationSeconds": 1.25}
    job = {"scriptName": "nn", "projectName": "wine", "learningRate": 0.05, "depedentVariable": "con_lott",
           "hiddenLayers": [{"activation": "relu", "widthModifier": 4, "dropout": 0.2}] * 3}
    for full in (False, True):
        text = summary.render(_order(outcome=outcome), job, full=full)
        assert text.count("Traceback (most recent call last)") == 1
        assert text.count("no column 'con_lott'") <= 3  # message, traceback's last line, the Job's own field
    text = summary.render(_order(outcome=outcome), job)
    assert "FAILED (reason: error) after 1 attempt(s) on w1@vm, 1.2 s" in text
    assert "Log (last 10 of 30 lines):" in text and "| epoch 29" in text and "| epoch 19" not in text
    assert "3 × activation=relu widthModifier=4 dropout=0.2" in text
    assert "--full" in text and len(text.splitlines()) < 50
    assert "| epoch 0" in summary.render(_order(outcome=outcome), job, full=True)


def test_a_big_outcome_is_summarised_and_an_empty_log_is_named_for_what_it_is() -> None:
    outcome = {"status": 200, "loss": 0.123456789, "metric": 0.9, "predictions": list(range(250)),
               "history": {"loss": [1.0] * 100}}
    text = summary.render(_order(state="succeeded", outcome=outcome, log=[]), {"scriptName": "nn"})
    assert "0.123457" in text and "... 250 values" in text and "(+ history: see --full)" in text
    assert "the script printed nothing" in text and "no output yet" not in text
    assert len(text.splitlines()) < 30
    running = summary.render(_order(state="running", outcome=None, log=[]), {"scriptName": "nn"})
    assert "no output yet" in running
