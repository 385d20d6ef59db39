"""Records into documents: template, dotted fields, chat messages, where filters; parquet by row
groups with only the columns a source needs."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.records import RecordFormat, RecordSkip
from engine.templates import TemplateError, parse_template
from engine.data.sources import SourceStats, iter_source
from engine.errors import ProfileError
from engine.profile import SourceConfig, loads_profile


def read(tmp_path, fmt, path, **kw):
    stats = SourceStats()
    docs = list(iter_source(SourceConfig(name="s", domain="science", format=fmt, path=path, **kw), stats,
                            base_dir=tmp_path))
    return docs, stats


def test_template_with_nested_fields_and_where(tmp_path):
    rows = [
        {"title": "Ising", "abstract": "Spins on a lattice.", "meta": {"lang": "en", "year": 2021}},
        {"title": "Potts", "abstract": "More states.", "meta": {"lang": "de", "year": 2022}},
        {"title": "XY", "meta": {"lang": "en", "year": 2023}},  # no abstract
        {"title": "Heis", "abstract": "Quantum.", "meta": {"lang": "en", "year": 2023}},
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, stats = read(tmp_path, "jsonl", "a.jsonl", template="{title} ({meta.year})\n\n{abstract}",
                       where={"meta.lang": "en"})
    assert docs == ["Ising (2021)\n\nSpins on a lattice.", "Heis (2023)\n\nQuantum."]
    assert stats.skipped == {"filtered out by where": 1, "no field 'abstract'": 1}
    docs, _ = read(tmp_path, "jsonl", "a.jsonl", field="meta.lang")
    assert docs == ["en", "de", "en", "en"]  # a dotted field reaches into nested objects

def test_messages_render_with_the_chat_template(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}]},
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"messages": [{"role": "tool", "content": "x"}]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, stats = read(tmp_path, "jsonl", "c.jsonl", field="messages")
    assert docs == ["<|system|>\nBe brief.\n<|end|>\n<|user|>\n2+2?\n<|end|>\n<|assistant|>\n4\n<|end|>"]
    assert stats.skipped == {"no string field 'messages'": 1, "unknown chat role 'tool'": 1}
    docs, _ = read(tmp_path, "jsonl", "c.jsonl", field="conversations")
    assert docs == ["<|user|>\nhi\n<|end|>\n<|assistant|>\nhello\n<|end|>"]


def test_parquet_nested_struct_row_groups_and_projection(tmp_path):
    n = 1000
    table = pa.table({
        "doc": pa.array([{"title": f"T{i}", "body": f"body {i}"} for i in range(n)]),
        "lang": ["en" if i % 3 else "fr" for i in range(n)],
        "huge": ["z" * 5000] * n,  # never read: not among the columns the source names
    })
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=128)
    docs, stats = read(tmp_path, "parquet", "p.parquet", template="{doc.title}: {doc.body}", where={"lang": ["en"]})
    assert docs == [f"T{i}: body {i}" for i in range(n) if i % 3]
    assert stats.skipped == {"filtered out by where": n - len(docs)}
    assert RecordFormat.of(template="{doc.title}: {doc.body}", where={"lang": "en"}).columns == ["doc", "lang"]
    docs, stats = read(tmp_path, "parquet", "p.parquet", template="{doc.title} {nope}")
    assert docs == [] and "no column 'nope' (columns: doc, lang, huge)" in stats.problems[0]


def test_parquet_messages_column(tmp_path):
    msgs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(5)]
    pq.write_table(pa.table({"messages": msgs}), tmp_path / "c.parquet")
    docs, _ = read(tmp_path, "parquet", "c.parquet", field="messages")
    assert docs[2] == "<|user|>\nq2\n<|end|>\n<|assistant|>\na2\n<|end|>"


def test_where_does_not_take_true_for_one():
    fmt = RecordFormat.of(where={"ok": True, "n": [1, 2]})
    assert fmt.keep({"ok": True, "n": 2})
    assert not fmt.keep({"ok": 1, "n": 2}) and not fmt.keep({"ok": True, "n": True}) and not fmt.keep({"n": 1})


@pytest.mark.parametrize("template, message", [
    ("{}", "expected named placeholders"), ("{0}", "expected named placeholders"),
    ("{a", "expected balanced braces"), ("{a!r}", "without ! or :"), ("{a:>4}", "without ! or :"),
    ("no fields", "expected at least one {field} placeholder"), ("{a..b}", "dotted path"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(template)


def test_profile_errors_name_key_and_value():
    base = '[profile]\nname = "p"\n[mix]\nscience = 1\n[[sources]]\nname = "a"\ndomain = "science"\npath = "x"\n'
    with pytest.raises(ProfileError, match=r'^<profile>: sources\[0\].template: expected named placeholders such as '
                                           r'\{title\}, not \{\} or \{0\}, got "\{\}"$'):
        loads_profile(base + 'format = "jsonl"\ntemplate = "{}"\n')
    with pytest.raises(ProfileError, match=r'sources\[0\].template: expected either field or template, not both'):
        loads_profile(base + 'format = "jsonl"\ntemplate = "{a}"\nfield = "b"\n')
    with pytest.raises(ProfileError, match=r'sources\[0\].where: only for record formats \(jsonl, parquet\), got format "text"'):
        loads_profile(base + 'format = "text"\nwhere = { lang = "en" }\n')
    with pytest.raises(ProfileError, match=r'sources\[0\].where.lang: expected a value or a list of values, got a list'):
        loads_profile(base + 'format = "jsonl"\nwhere = { lang = [] }\n')


keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.tuples(texts, keys), min_size=1, max_size=5), values=st.dictionaries(keys, texts))
def test_template_renders_like_str_format(parts, values):
    template = "".join(lit.replace("{", "{{").replace("}", "}}") + "{" + key + "}" for lit, key in parts)
    fmt = RecordFormat.of(template=template)
    if all(key in values for _, key in parts):
        assert fmt.render(values) == template.format(**values)
    else:
        with pytest.raises(RecordSkip):
            fmt.render(values)
