"""The documentation's structure, without building it (`make docs` builds it with mkdocs
--strict): the README stays a front door whose links resolve, every page the site's nav names
exists, and the generated pages hold exactly what the code says (docs/hooks/generated.py)."""
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

import qgm_ray
from qgm_ray.config import describe_keys

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hook():
    spec = importlib.util.spec_from_file_location("docs_generated_hook", DOCS / "hooks" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the manual lives in docs/"
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "run"], ["make", "test"]]
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the site"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_nav_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert "design.md" in pages and "reference/config-keys.md" in pages
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"


def test_key_table_is_what_config_keys_prints():
    hook = _hook()
    text = describe_keys()
    rows = hook.parse_key_table(text)
    assert [row[0] for row in rows] == [line.split()[0] for line in text.splitlines()[1:]]
    by_key = {row[0]: row for row in rows}
    # columns that hold spaces come back whole
    assert by_key["output_dir"][1] == "str | null"
    assert by_key["data.options"][2] == "{num_samples: 20000}"
    table = hook.config_keys().splitlines()
    assert len(table) == 2 + len(rows)
    for line, (key, *_rest) in zip(table[2:], rows):
        assert line.startswith(f"| `{key}` |")
        assert line.count("|") == 5, line   # a `|` inside a cell is escaped
    # cells are plain text as the terminal prints them: <name> is no HTML tag, _ no emphasis
    name_row = next(line for line in table if line.startswith("| `name` |"))
    assert "runs/&lt;name&gt;" in name_row


def test_api_page_documents_every_stable_name():
    blocks = _hook().api().split("\n\n")
    names = [block.rsplit(".", 1)[1] for block in blocks]
    assert names == [name for name in qgm_ray.__all__ if not name.startswith("__")]
    assert all(block.startswith("::: qgm_ray.") for block in blocks)


def test_an_unknown_marker_fails_the_build():
    class Page:
        class file:
            src_uri = "x.md"

    hook = _hook()
    assert "| `dsgdm_n` |" in hook.on_page_markdown("<!-- generated: rule-knobs -->\n", Page, None, None)
    with pytest.raises(ValueError, match="unknown generated block 'config-key'"):
        hook.on_page_markdown("<!-- generated: config-key -->\n", Page, None, None)
