"""The catalog: 23 v3 sets + lte, generator cards, profiles, unknown-name errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from afpbench import catalog
from afpbench.errors import AfpbenchError, UnknownNameError

V3 = ["coco", "flickr", "sd2", "sd3", "sdxl", "if", "dalle2", "dalle3", "playground_v25", "diffusiondb", "sgxl", "glide",
      "stylization", "df", "dfdc", "ffpp", "lama", "sd2ip", "liif", "sd2sr", "adversarial", "backdoor", "data_poisoning"]


def test_v3_profile_has_the_papers_23_sets_and_roles():
    prof = catalog.get_profile("v3")
    assert sorted(prof.names) == sorted(V3)
    assert sorted(n for n in prof.names if prof.role(n) == "held-in") == ["coco", "sd2ip", "sd3"]
    assert len(prof.held_out()) == 20


def test_v1_profile_has_16_sets_with_lte_and_sd2_held_in():
    prof = catalog.get_profile("v1")
    assert len(prof.names) == 16
    assert "lte" in prof.names and "liif" not in prof.names and "sd3" not in prof.names
    assert sorted(n for n in prof.names if prof.role(n) == "held-in") == ["coco", "sd2", "sd2ip"]


@pytest.mark.parametrize("name", sorted(catalog.recipes()))
def test_every_recipe_is_complete(name):
    r = catalog.get_recipe(name)
    assert r.version >= 1 and r.paper_name and r.description
    if r.acquisition == "regenerate":
        gen = catalog.get_generator(r.generator)
        assert gen.license and gen.paper
    # every parameter says whether it is the paper's or afpbench's decision
    for p in r.params.values():
        assert isinstance(p.choice, bool)
    if r.name in V3 and r.name not in ("photos",):
        assert r.count.value == 3000


def test_paper_counts_and_choices_are_distinguished():
    # v1-era sets have 3,000 images documented in the authors' logs; new v3 sets are a choice.
    assert catalog.get_recipe("sd2").count.choice is False
    assert catalog.get_recipe("sd3").count.choice is True
    assert "count" in catalog.get_recipe("sd3").choices()
    adv = catalog.get_recipe("adversarial")
    assert adv.params["attack"].choice is True


def test_reported_table_reproduces_the_papers_averages():
    prof = catalog.get_profile("v3")
    rows = prof.reported_rows()["AntifakePrompt"]
    assert len(rows) == 23
    assert round(sum(rows.values()) / 23, 2) == prof.paper_averages["AntifakePrompt"]["all"]
    held = prof.held_out()
    assert round(sum(rows[n] for n in held) / len(held), 2) == prof.paper_averages["AntifakePrompt"]["held_out"]


def test_v1_controlnet_column_maps_to_stylization():
    rows = catalog.get_profile("v1").reported_rows()
    assert rows["AntifakePrompt"]["stylization"] == pytest.approx(91.47)


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(UnknownNameError, match="Did you mean: sd3"):
        catalog.get_recipe("sd33")
    with pytest.raises(UnknownNameError, match="profile"):
        catalog.get_profile("v2")


def test_aliases_resolve_authors_folder_names():
    assert catalog.resolve_alias("DALLE-2") == "dalle2"
    assert catalog.resolve_alias("commonFake_Flickr") == "sd2"
    assert catalog.resolve_alias("ControlNet") == "stylization"
    assert catalog.resolve_alias("SD2IP") == "sd2ip"
    assert catalog.resolve_alias("somethingelse") is None


def test_bad_recipe_fails_loudly_with_the_file_named(tmp_path, monkeypatch):
    root = tmp_path / "cat"
    shutil.copytree(catalog.catalog_root() / "recipes", root / "recipes")
    shutil.copytree(catalog.catalog_root() / "generators", root / "generators")
    (root / "recipes" / "sd3.yaml").write_text((root / "recipes" / "sd3.yaml").read_text().replace("generator: sd3-medium", "generator: sd3-mediun"))
    monkeypatch.setenv("AFPBENCH_CATALOG", str(root))
    for f in (catalog.recipes, catalog.generators, catalog.profiles):
        f.cache_clear()
    try:
        with pytest.raises(AfpbenchError, match="sd3-medium") as exc:
            catalog.recipes()
        assert "sd3.yaml" in str(exc.value)
        (root / "recipes" / "sd3.yaml").write_text("name: sd3\nversion: zero\n")
        catalog.recipes.cache_clear()
        with pytest.raises(AfpbenchError, match="sd3.yaml"):
            catalog.recipes()
    finally:
        monkeypatch.delenv("AFPBENCH_CATALOG")
        for f in (catalog.recipes, catalog.generators, catalog.profiles):
            f.cache_clear()


def test_catalog_ships_in_the_wheel_and_list_works_from_anywhere(tmp_path):
    """Build the wheel, install it in a fresh venv, run `afpbench list` outside the repo."""
    from tests_support import REPO_ROOT

    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(REPO_ROOT)],
                   check=True, capture_output=True)
    wheel = next(wheel_dir.glob("afpbench-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", "from afpbench.cli import main; main(['list', 'datasets'])"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "playground_v25" in out.stdout and "(23 rows)" in out.stdout
    assert str(target) in subprocess.run([sys.executable, "-c", "import afpbench.catalog as c; print(c.catalog_root())"],
                                         capture_output=True, text=True, cwd=tmp_path, env=env).stdout


@pytest.mark.parametrize("profile", ["v3", "v1"])
def test_benchmark_md_table_matches_the_catalog(profile):
    from tests_support import REPO_ROOT

    from afpbench.listing import markdown_catalog_table

    text = (REPO_ROOT / "BENCHMARK.md").read_text()
    start = text.index(f"<!-- catalog-table:{profile}:start -->") + len(f"<!-- catalog-table:{profile}:start -->")
    end = text.index(f"<!-- catalog-table:{profile}:end -->")
    assert text[start:end].strip() == markdown_catalog_table(profile), "regenerate BENCHMARK.md's table: python -m afpbench.listing"
