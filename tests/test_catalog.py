"""The catalog: 23 v3 sets + lte, generator cards, profiles, unknown-name errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest
from helpers import REPO

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
    assert r.paper_name and r.description
    if r.acquisition == "regenerate":
        gen = catalog.get_generator(r.generator)
        assert gen.license and gen.paper
    if r.name in V3 and r.name not in ("photos",):
        assert r.count.value == 3000


@pytest.mark.parametrize("name", sorted(catalog.recipes()))
def test_every_recipe_fits_the_backend_that_builds_it(name):
    """The backend runs the recipe's task and reads every parameter of the recipe and the card
    (with the recipe's source): a typo in a task, a parameter name or a card default fails here."""
    from afpbench.generate import backend_for
    from afpbench.generate.base import check_recipe
    from afpbench.registry import BACKENDS
    from afpbench.sources import source

    r = catalog.get_recipe(name)
    card = catalog.get_generator(r.generator) if r.generator else None
    if r.acquisition == "import" and r.task != "sample":
        with pytest.raises(AfpbenchError, match=f"afpbench import {name}"):
            backend_for(r, card)
        return
    backend = BACKENDS.get(backend_for(r, card))
    check_recipe(backend, r, card, source(r.source.kind).param_names)
    if backend.kind == "network":
        from afpbench.generate.network import TASK_PIPELINES

        assert TASK_PIPELINES[r.task] == card.pipeline


def test_a_misspelt_parameter_or_task_is_refused():
    from afpbench.generate.base import check_recipe
    from afpbench.registry import BACKENDS
    from afpbench.sources import source

    r = catalog.get_recipe("sd2")
    card = catalog.get_generator(r.generator)
    diffusion, captions = BACKENDS.get("diffusion"), source("captions").param_names
    params = {**r.params, "num_inference_step": r.params["num_inference_steps"]}
    with pytest.raises(UnknownNameError, match="Did you mean: num_inference_steps"):
        check_recipe(diffusion, r.model_copy(update={"params": params}), card, captions)
    with pytest.raises(AfpbenchError, match="task 'text2imge'"):
        check_recipe(diffusion, r.model_copy(update={"task": "text2imge"}), card, captions)
    with pytest.raises(UnknownNameError, match="generator card 'sd2-1'.*Did you mean: guidance_scale"):
        check_recipe(diffusion, r, card.model_copy(update={"defaults": {"guidance_scal": 7.5}}), captions)


def test_every_buildable_recipe_has_its_regression_fixture():
    """tests/testdata/<recipe>-v<version>.json for each recipe afpbench builds (see tests/_regression.py):
    a new recipe, or a version bump, needs its fixture; a fixture of no current recipe version is stale."""
    from _regression import FIXTURES

    from afpbench.generate import backend_for

    buildable = set()
    for r in catalog.recipes().values():
        try:
            backend_for(r, catalog.get_generator(r.generator) if r.generator else None)
        except AfpbenchError:
            continue
        buildable.add(f"{r.name}-v{r.version}.json")
    present = {p.name for p in FIXTURES.glob("*-v*.json")}
    assert buildable - present == set(), "write them: run the test that builds each recipe with --update"
    assert present - buildable == set(), "stale fixtures: delete them"


def test_names_and_aliases_are_unique():
    """resolve_alias maps an archive folder to the first recipe that claims it: two claims would be silent."""
    claims: dict[str, list[str]] = {}
    for r in catalog.recipes().values():
        for key in {r.name.lower(), *(a.lower() for a in r.aliases)}:
            claims.setdefault(key, []).append(r.name)
    assert {k: v for k, v in claims.items() if len(v) > 1} == {}


# Generator cards that name a hub model without pinning its revision (their revision is
# resolved and recorded at build time). Written when the hub could not be reached to look
# the commits up; a card added since must pin one, and pinning one of these removes it here.
UNPINNED = {
    "controlnet-canny-sd15", "deepfloyd-if", "playground-v25", "resnet50-imagenet", "sd-x4-upscaler", "sd2-1", "sd2-inpainting",
    "sd3-medium", "sdxl-base",
}


def test_generator_cards_pin_the_hub_revision():
    from afpbench.plan import looks_like_path

    unpinned = set()
    for g in catalog.generators().values():
        models = [(g.model_id, g.revision)] + [(s.model_id, s.revision) for s in g.stages]
        # The sample backend's model_id is a dataset, read by the source; users supply network models.
        hub = [(m, rev) for m, rev in models if m and not looks_like_path(m) and g.backend != "sample" and not g.supplied_by_user]
        if any(rev is None for _, rev in hub):
            unpinned.add(g.name)
        for _, rev in hub:
            assert rev is None or len(rev) == 40 and all(c in "0123456789abcdef" for c in rev), f"{g.name}: revision {rev!r} is not a commit hash"
    if unpinned:
        warnings.warn(f"generator cards without a pinned hub revision: {', '.join(sorted(unpinned))}", stacklevel=1)
    assert unpinned - UNPINNED == set(), "pin 'revision' (the hub commit) in these new generator cards"
    assert UNPINNED - unpinned == set(), "these cards now pin their revision: remove them from UNPINNED"


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
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(REPO)],
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
    from afpbench.listing import markdown_catalog_table

    text = (REPO / "BENCHMARK.md").read_text()
    start = text.index(f"<!-- catalog-table:{profile}:start -->") + len(f"<!-- catalog-table:{profile}:start -->")
    end = text.index(f"<!-- catalog-table:{profile}:end -->")
    assert text[start:end].strip() == markdown_catalog_table(profile), "regenerate BENCHMARK.md's table: python -m afpbench.listing"
