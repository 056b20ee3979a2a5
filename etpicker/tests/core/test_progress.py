from etpicker.core import progress


def test_a_log_gets_plain_progress_lines_with_the_time_left(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line after every item
    assert list(progress.tracked(iter(range(4)), 4, "epoch 1/3")) == [0, 1, 2, 3]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("epoch 1/3: 1/4 batches (25 %), about ") and lines[0].endswith(" s left")
    assert len(lines) == 3  # none once all are done


def test_short_steps_print_nothing(capsys):
    assert list(progress.tracked(range(3), 3, "segmenting t")) == [0, 1, 2]
    assert capsys.readouterr().out == ""
