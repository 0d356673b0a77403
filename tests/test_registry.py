"""The registry: one object per name, base-class checks, lazy entries, entry-point plugins, did-you-mean."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import typing

import pytest

from afpbench.errors import AfpbenchError, UnknownNameError
from afpbench.registry import BACKENDS, SOURCES, Registry


def _install_plugin(tmp_path, monkeypatch, group: str, entries: dict[str, str], name: str = "plug") -> None:
    """A real installed distribution (a ``.dist-info`` on sys.path) declaring entry points."""
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_lazy_entries_tags_and_did_you_mean():
    reg: Registry = Registry("widget", entry_point_group="afpbench.test_widgets")
    reg.register_lazy("json_dumps", "json:dumps")
    assert "json_dumps" in reg.names() and reg.target("json_dumps") == "json:dumps"
    assert reg.get("json_dumps.pretty") is json.dumps
    with pytest.raises(UnknownNameError, match="Did you mean: json_dumps"):
        reg.get("json_dump")
    with pytest.raises(ValueError):
        reg.register("a.b", object())


def test_a_lazy_entry_is_imported_only_when_asked_for(tmp_path, monkeypatch):
    (tmp_path / "afpbench_lazy_probe.py").write_text("class Widget:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget")
    reg.register_lazy("probe", "afpbench_lazy_probe:Widget")
    assert reg.names() == ["probe"] and reg.origin("probe") == "afpbench_lazy_probe:Widget" and "probe.x" in reg
    assert "afpbench_lazy_probe" not in sys.modules
    cls = reg.get("probe")
    assert cls.__name__ == "Widget" and "afpbench_lazy_probe" in sys.modules
    assert reg.target("probe") is None and reg.origin("probe") == "afpbench_lazy_probe:Widget"
    monkeypatch.delitem(sys.modules, "afpbench_lazy_probe")


def test_a_name_holds_one_object():
    reg: Registry = Registry("widget")
    reg.register("dumps", json.dumps)
    reg.register("dumps", json.dumps)  # the same object again (a module imported twice): fine
    with pytest.raises(AfpbenchError, match="widget 'dumps' is already registered .*json:dumps.*under another name"):
        reg.register("dumps", json.loads)
    with pytest.raises(AfpbenchError, match="already registered"):
        reg.register_lazy("dumps", "json:loads")
    assert reg.get("dumps") is json.dumps
    reg.register_lazy("dedent", "textwrap:dedent")
    reg.register_lazy("dedent", "textwrap:dedent")
    with pytest.raises(AfpbenchError, match=r"already registered \(textwrap:dedent\)"):
        reg.register_lazy("dedent", "textwrap:indent")
    with pytest.raises(AfpbenchError, match="already registered"):
        reg.register("dedent", textwrap.indent)
    # A decorator in the module a lazy entry points at registers that same object: fine.
    reg.register("dedent")(textwrap.dedent)
    assert reg.get("dedent") is textwrap.dedent and reg.target("dedent") is None


def test_base_class_is_checked_when_an_entry_is_loaded():
    reg: Registry = Registry("decoder", base_cls="json:JSONDecoder")
    reg.register_lazy("plain", "json:JSONDecoder")
    reg.register_lazy("wrong", "json:JSONEncoder")
    assert reg.get("plain") is json.JSONDecoder
    with pytest.raises(AfpbenchError, match=r"decoder 'wrong' \(json:JSONEncoder\) is JSONEncoder, not a subclass of json.decoder.JSONDecoder"):
        reg.get("wrong")
    assert "wrong" in reg.names()  # refused, not half-registered: it fails again the same way
    with pytest.raises(AfpbenchError, match="not a subclass"):
        reg.get("wrong")
    with pytest.raises(AfpbenchError, match="is a function, not a subclass"):
        reg.register("dumps", json.dumps)
    typed: Registry = Registry("decoder", base_cls=json.JSONDecoder)
    typed.register("sub", type("Sub", (json.JSONDecoder,), {}))
    with pytest.raises(AfpbenchError, match="not a subclass"):
        typed.register("enc", json.JSONEncoder)


def test_entry_point_plugins_join_and_cannot_replace_a_bundled_name(tmp_path, monkeypatch, caplog):
    group = "afpbench.test_widgets"
    _install_plugin(tmp_path, monkeypatch, group, {"plugged": "textwrap:dedent", "bundled": "textwrap:indent"})
    reg: Registry = Registry("widget", entry_point_group=group)
    reg.register_lazy("bundled", "json:dumps")
    with caplog.at_level(logging.WARNING, logger="afpbench.registry"):
        assert reg.names() == ["bundled", "plugged"]
    assert "ignoring the widget 'bundled' of plug (textwrap:indent): the name is taken by json:dumps" in caplog.text
    assert reg.origin("plugged") == "textwrap:dedent (plugin from plug)"
    assert reg.get("plugged") is textwrap.dedent and reg.get("bundled") is json.dumps
    reg._clear()
    assert reg.names() == ["bundled", "plugged"] and reg.get("bundled") is textwrap.indent  # the plugin's, once nothing is bundled


def test_a_plugin_of_the_wrong_class_is_refused_with_its_origin(tmp_path, monkeypatch):
    group = "afpbench.test_sources"
    _install_plugin(tmp_path, monkeypatch, group, {"not_a_source": "json:JSONEncoder"}, name="badplug")
    reg: Registry = Registry("source", base_cls="afpbench.sources.base:Source", entry_point_group=group)
    with pytest.raises(AfpbenchError, match=r"source 'not_a_source' \(json:JSONEncoder \(plugin from badplug\)\) is JSONEncoder, not a subclass of afpbench.sources.base.Source"):
        reg.get("not_a_source")


# -- the project's registries --------------------------------------------------------------
def test_every_source_kind_of_the_catalog_is_a_registered_source():
    import afpbench.sources  # noqa: F401  (registers the bundled sources)
    from afpbench.catalog import SourceSpec
    from afpbench.sources.base import Source

    kinds = typing.get_args(SourceSpec.model_fields["kind"].annotation)
    assert set(kinds) == set(SOURCES.names())
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        assert issubclass(cls, Source)
        # Rows carry image_ref["kind"] = cls.name: it must lead back to this class.
        assert SOURCES.get(cls.name) is cls


def test_every_backend_a_card_names_is_registered():
    import afpbench.generate  # noqa: F401  (registers the bundled backends)
    from afpbench.catalog import generators
    from afpbench.generate.base import Backend

    for card in generators().values():
        name = "attacks" if card.backend == "classifier" else card.backend
        assert name in BACKENDS
        cls = BACKENDS.get(name)
        assert issubclass(cls, Backend) and cls.kind == name
