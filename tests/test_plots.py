"""Figures are read back and checked for drawn data, not just for existing."""

from __future__ import annotations

import re

import matplotlib.colors
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.helpers import synthetic_sweep
from tests.helpers import synthetic_tables as tables
from trajectories import analysis, plots
from trajectories.analysis import AnalysisError


@pytest.fixture(scope="module")
def curves():
    return tables(synthetic_sweep(models=["70m", "70m-deduped", "160m"], n_items=100), n_boot=50)[0]


def pixels_near(png, color, tol=0.06) -> int:
    image = matplotlib.image.imread(png)[..., :3]
    return int((np.abs(image - np.array(matplotlib.colors.to_rgb(color))).max(axis=-1) < tol).sum())


def assert_drawn(paths, colors=()):
    """Both formats written; the PNG is more than a blank frame and shows each colour; the SVG has paths."""
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and {p.with_suffix(".svg") for p in pngs} <= set(paths)
    for png in pngs:
        rgb = (matplotlib.image.imread(png)[..., :3] * 255).astype(np.uint32)
        assert len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])) > 50, png
        for color in colors:
            assert pixels_near(png, color) > 30, (png, color)
        assert len(re.findall(r"<path ", png.with_suffix(".svg").read_text())) > 20


def test_plot_all_draws_every_view(curves, tmp_path):
    paths = plots.plot_all(curves, tmp_path)
    names = {p.name for p in paths}
    expected = {"phenomena", "scaling", "heatmap_70m", "heatmap_70m-deduped", "heatmap_160m",
                "paradigms_agreement", "paradigms_islands", "paradigms_binding"}
    assert {f"{n}.{fmt}" for n in expected for fmt in ("png", "svg")} == names
    styles = plots.model_styles(curves)
    colors = {s["color"] for s in styles.values()}
    assert len(colors) == 2  # one colour per size: 70m and its deduped twin share one
    assert_drawn([p for p in paths if p.stem.startswith(("phenomena", "paradigms"))], colors)
    assert_drawn([p for p in paths if p.stem.startswith(("heatmap", "scaling"))])


def test_sizes_are_ordered_by_parameters_and_deduped_is_dotted(curves):
    styles = plots.model_styles(curves)
    assert styles["70m"]["order"] < styles["70m-deduped"]["order"] < styles["160m"]["order"]
    assert styles["70m-deduped"]["linestyle"] == ":" and styles["70m"]["linestyle"] == "-"
    assert styles["70m"]["color"] == styles["70m-deduped"]["color"] != styles["160m"]["color"]


def test_tokens_axis_and_one_phenomenon(curves, tmp_path):
    paths = plots.plot_all(curves[curves.model == "160m"], tmp_path, x="tokens", phenomenon="islands")
    assert {p.stem for p in paths} == {"phenomena", "paradigms_islands", "heatmap_160m"}
    assert_drawn(paths)
    with pytest.raises(AnalysisError, match="no tokens"):
        plots.plot_all(curves.assign(tokens=pd.NA), tmp_path, x="tokens")
    with pytest.raises(AnalysisError, match="phenomena: agreement, binding, islands"):
        plots.plot_all(curves, tmp_path, phenomenon="ellipsis")


def test_other_metrics_and_task_filter(curves, tmp_path):
    steps = sorted(curves.step.unique())
    ppl = pd.DataFrame({
        "model": "160m", "size": "160m", "params": 160_000_000, "deduped": False, "step": steps,
        "tokens": [s * 1000 for s in steps], "level": "metric", "task": "lambada_openai/perplexity", "phenomenon": "",
        "acc": np.geomspace(5e4, 20, len(steps)), "acc_stderr": 1.0, "ci_method": "stderr", "n": 50,
    }).assign(ci_low=lambda d: d.acc - 2, ci_high=lambda d: d.acc + 2)
    both = pd.concat([curves, ppl], ignore_index=True)
    other = plots.other_metrics(both, tmp_path)
    assert_drawn(other, [plots.model_styles(both)["160m"]["color"]])
    assert "lambada_openai/perplexity" in other[1].read_text()
    assert_drawn(plots.plot_all(both, tmp_path, task="lambada*"))
    with pytest.raises(AnalysisError, match="no task matches 'nope'"):
        plots.plot_all(both, tmp_path, task="nope")


def test_acquisition_plot(curves, tmp_path):
    curves_items = tables(synthetic_sweep(models=["70m", "160m"], n_items=100), n_boot=20)
    acq = analysis.acquisition(*curves_items, n_boot=50)
    paths = plots.acquisition_plot(acq, curves_items[0], tmp_path)
    assert_drawn(paths, {s["color"] for s in plots.model_styles(curves_items[0]).values()})


def test_empty_or_foreign_tables_are_clear_errors(tmp_path):
    with pytest.raises(AnalysisError, match="empty"):
        plots.plot_all(pd.DataFrame(), tmp_path)
    with pytest.raises(AnalysisError, match="lacks columns"):
        plots.plot_all(pd.DataFrame({"model": ["x"], "step": [1]}), tmp_path)


def test_seeds_are_one_mean_line_with_a_band_and_titles_are_short(tmp_path):
    from dataclasses import replace

    from trajectories.schema import ModelInfo

    units = []
    for i, (name, seed, top) in enumerate((("70m", None, 0.7), ("70m-seed1", 1, 0.9))):
        info = ModelInfo(name, "70m", 70_000_000, seed=seed, tokens_per_step=1000)
        units += [(replace(c, model=info), replace(r, items=r.items.assign(model=name)))
                  for c, r in synthetic_sweep(models=["70m"], finals={"70m": {"agreement": top}}, seed=i)]
    curves = tables(units, n_boot=20)[0]
    curves = curves.assign(task=curves.task.str.replace("agreement_", "family_subject_verb_agreement_across_a_"
                                                         "very_long_attractor_"))
    paths = plots.paradigm_grid(curves, "agreement", tmp_path)
    svg = paths[1].read_text()
    assert "family" not in svg and "seed mean, band: range over seeds" in svg
    color = plots.model_styles(curves)["70m"]["color"]
    assert_drawn(paths, [color])
    drawn = plots._seed_means(curves[curves.level == "paradigm"], "task", "step", {"70m": ["70m", "70m-seed1"]})
    assert set(drawn.model) == {"70m"}
    final = drawn[(drawn.step == drawn.step.max()) & drawn.task.str.contains("attractor")].iloc[0]
    assert final.ci_low < 0.8 < final.ci_high  # the band spans both seeds' finals, about 0.7 and 0.9
    long = "minigrammar_subject_verb_agreement_across_relative_clause"
    titles = plots._short_titles([long, "minigrammar_a"])
    assert titles["minigrammar_a"] == "a" and titles[long].replace("\n", "") == long.removeprefix("minigrammar_")
    assert len(titles[long].splitlines()) == 2 and all(len(line) <= plots.TITLE_WIDTH for line in
                                                       titles[long].splitlines())
    assert plots._short_titles(["lambada_openai/perplexity"]) == {"lambada_openai/perplexity":
                                                                  "lambada_openai/perplexity"}


def test_curves_against_held_out_loss(curves, tmp_path):
    loss = curves[["model", "step"]].drop_duplicates().assign(loss=lambda d: 3 + 5 / np.sqrt(1 + d.step))
    paths = plots.plot_all(curves, tmp_path, x="loss", loss=loss, phenomenon="islands")
    assert {p.stem for p in paths} == {"phenomena_by_loss", "paradigms_islands_by_loss"}
    assert_drawn(paths)
    with pytest.raises(AnalysisError, match="needs a loss table"):
        plots.plot_all(curves, tmp_path, x="loss")


def test_kappa_heatmap(curves, tmp_path):
    kappa = pd.DataFrame({"unit": "phenomenon:agreement", "model_a": ["160m", "160m", "70m"],
                          "model_b": ["70m", "70m-deduped", "70m-deduped"], "kappa": [0.2, 0.3, 0.9]})
    paths = plots.kappa_heatmap(kappa, curves, tmp_path)
    assert_drawn(paths)
    assert "0.90" in paths[1].read_text()  # annotated cells


def test_checkpoints_with_the_weights_of_another_step_are_marked_and_reported(curves, tmp_path):
    from trajectories import report

    marked = curves.assign(same_weights_as=curves.step.map({1: 0, 2: 0}).astype("Int64"))
    plain = plots.phenomenon_grid(curves, tmp_path / "plain")[0]
    ringed = plots.phenomenon_grid(marked, tmp_path / "marked")[0]
    assert plots.phenomenon_grid(curves, tmp_path / "again")[0].read_bytes() == plain.read_bytes()  # deterministic
    assert ringed.read_bytes() != plain.read_bytes()
    reused = analysis.reused_checkpoints(marked)
    assert reused.to_dict("list") == {"model": ["160m", "160m", "70m", "70m", "70m-deduped", "70m-deduped"],
                                      "step": [1, 2] * 3, "same_weights_as": [0] * 6}
    assert report._reused(reused)[0] == "160m: steps 1, 2 have the weights of step 0."
    assert analysis.reused_checkpoints(curves).empty


def test_evaluated_checkpoints_are_dots_where_some_were_skipped(curves, tmp_path):
    evaluated = curves[~curves.step.isin([4, 8])]
    gapped = evaluated.assign(skipped_from=evaluated.step.map({16: 4}).astype("Int64"))
    plain = plots.phenomenon_grid(evaluated, tmp_path / "plain")[0].with_suffix(".svg").read_text()
    dotted = plots.phenomenon_grid(gapped, tmp_path / "dotted")[0].with_suffix(".svg").read_text()
    drawn = (gapped.level == "phenomenon").sum()
    assert dotted.count("<use ") - plain.count("<use ") >= drawn  # a marker per evaluated checkpoint of each curve
    assert "interpolated" in dotted and "interpolated" not in plain


def test_long_panel_titles_fit_their_panels_at_the_saved_size(curves, tmp_path, monkeypatch):
    """Drawn as saved: no panel title overlaps another panel or its title, and none is wider than its column."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out_dir, stem: figures.append(fig) or [])
    long = curves.assign(task=curves.task.str.replace("agreement_", "minigrammar_subject_verb_agreement_across_"
                                                      "relative_clause_"))
    plots.paradigm_grid(long, "agreement", tmp_path)
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(axes) >= 2 and all("minigrammar" not in ax.get_title() for ax in axes)
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    frames = [ax.get_window_extent(renderer) for ax in axes]
    width = min(f.width for f in frames) + (frames[1].x0 - frames[0].x1)  # a panel and the gap to the next
    for i, title in enumerate(titles):
        assert title.width <= width
        assert not any(title.overlaps(other) for j, other in enumerate(titles + frames) if j % len(axes) != i)
