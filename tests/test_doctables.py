"""The docs' table blocks and figure copies, regenerated from results and checked against them."""

from __future__ import annotations

import pandas as pd
import pytest

from parrotscope.doctables import DocTableError, check, main, parse_spec, regenerate, write

README = """# title

Prose stays as written.

<!-- table results/t.csv -->
| old | table |
<!-- /table -->

More prose.

<!-- table results/t.csv columns="subset|IN" decimals=2 -->
<!-- /table -->

<!-- figure results/f.png docs/img/f.png -->
"""


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    pd.DataFrame({"subset": ["random", "text_only"], "IN": [0.1234, 0.5678], "n": [3, 4]}).to_csv(
        tmp_path / "results" / "t.csv", index=False)
    (tmp_path / "results" / "f.png").write_bytes(b"png one")
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def test_blocks_are_rebuilt_from_results_and_prose_is_kept(checkout):
    assert sorted(check(checkout)) == ["README.md: figure docs/img/f.png from results/f.png",
                                       "README.md: table from results/t.csv", "README.md: table from results/t.csv"]
    assert main(["--root", str(checkout), "--check"]) == 1
    assert main(["--root", str(checkout)]) == 0
    text = (checkout / "README.md").read_text()
    assert "Prose stays as written." in text and "More prose." in text and "| old |" not in text
    first = text.split("<!-- table results/t.csv -->\n")[1].split("<!-- /table -->")[0]
    assert first == pd.read_csv(checkout / "results" / "t.csv").to_markdown(index=False) + "\n"
    second = text.split('decimals=2 -->\n')[1].split("<!-- /table -->")[0]
    assert "0.57" in second and "0.5678" not in second and "| n" not in second
    assert (checkout / "docs" / "img" / "f.png").read_bytes() == b"png one"
    assert check(checkout) == [] and main(["--root", str(checkout), "--check"]) == 0
    assert write(checkout) == []  # nothing left to rewrite


def test_a_changed_result_makes_the_check_fail(checkout):
    write(checkout)
    pd.DataFrame({"subset": ["random"], "IN": [0.9], "n": [1]}).to_csv(checkout / "results" / "t.csv", index=False)
    (checkout / "results" / "f.png").write_bytes(b"png two")
    assert len(check(checkout)) == 3 and main(["--root", str(checkout), "--check"]) == 1


def test_missing_results_and_bad_markers_are_errors(checkout, capsys):
    (checkout / "results" / "t.csv").unlink()
    assert main(["--root", str(checkout), "--check"]) == 2
    assert "missing result results/t.csv" in capsys.readouterr().err
    with pytest.raises(DocTableError, match="expected a CSV path"):
        parse_spec('results/t.csv colums="a"')
    (checkout / "results" / "t.csv").write_text("subset,IN\nrandom,0.1\n")
    with pytest.raises(DocTableError, match=r"no column\(s\) \['n'\]"):
        regenerate('<!-- table results/t.csv columns="subset|n" -->\n<!-- /table -->', checkout)


def test_a_block_can_show_some_rows_of_a_long_table(checkout):
    (checkout / "results" / "t.csv").write_text("model,group,S\nb,raw,0.1\na,raw,0.2\nc,raw,0.3\na,removed,0.4\n")
    text, _ = regenerate('<!-- table results/t.csv rows="a|c" columns="model|S" -->\n<!-- /table -->', checkout)
    rows = [line.replace(" ", "") for line in text.splitlines()[3:]]
    assert rows == ["|a|0.2|", "|c|0.3|", "|a|0.4|", "<!--/table-->"]
    with pytest.raises(DocTableError, match=r"no row\(s\) \['d'\]"):
        regenerate('<!-- table results/t.csv rows="a|d" -->\n<!-- /table -->', checkout)


def test_skip_missing_rewrites_what_the_results_hold_and_keeps_the_rest(checkout, capsys):
    (checkout / "README.md").write_text(README + "\n<!-- table results/absent.csv -->\n| kept |\n<!-- /table -->\n"
                                        "<!-- figure results/absent.png docs/img/absent.png -->\n")
    assert main(["--root", str(checkout)]) == 2  # without the option a missing result is an error
    assert main(["--root", str(checkout), "--skip-missing"]) == 0
    out = capsys.readouterr().out
    assert "kept, no result: results/absent.csv" in out and "kept, no result: results/absent.png" in out
    text = (checkout / "README.md").read_text()
    assert "| kept |" in text and "| old |" not in text
    assert (checkout / "docs" / "img" / "f.png").exists() and not (checkout / "docs" / "img" / "absent.png").exists()
