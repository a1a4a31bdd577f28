import pytest

from trajectories.tasks import BLIMP_PARADIGMS, BLIMP_PHENOMENA, TaskCatalog, TaskError


def test_blimp_families():
    catalog = TaskCatalog()
    assert len(BLIMP_PARADIGMS) == 67 and len(BLIMP_PHENOMENA) == 13
    everything = catalog.expand("blimp")
    assert len(everything) == 67 and all(t.startswith("blimp_") for t in everything)
    islands = catalog.expand("blimp:island_effects")
    assert "blimp_wh_island" in islands and all(catalog.phenomenon(t) == "island_effects" for t in islands)
    chosen = catalog.expand("adjunct_island,blimp_wh_island,adjunct_island")
    assert chosen == ["blimp_adjunct_island", "blimp_wh_island"]


def test_phenomena_match_the_data(blimp_dir):
    import json

    for paradigm, phenomenon in BLIMP_PARADIGMS.items():
        first = json.loads((blimp_dir / f"{paradigm}.jsonl").open().readline())
        assert first["linguistics_term"] == phenomenon


def test_unknown_tasks_name_close_matches():
    catalog = TaskCatalog()
    with pytest.raises(TaskError, match="Did you mean: adjunct_island"):
        catalog.expand("adjunct_islnd")
    with pytest.raises(TaskError, match="no phenomenon 'islands'.*island_effects"):
        catalog.expand("blimp:islands")


def test_blimp_dir_points_tasks_at_local_files(blimp_dir, tmp_path):
    config = TaskCatalog(blimp_dir=blimp_dir).config("blimp_wh_island")
    assert config["task"] == "blimp_wh_island" and config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"]["train"] == str(blimp_dir / "wh_island.jsonl")
    (tmp_path / "wh_island.jsonl").write_text((blimp_dir / "wh_island.jsonl").read_text())
    with pytest.raises(TaskError, match=r"missing task data files in --blimp-dir .*adjunct_island\.jsonl"):
        TaskCatalog(blimp_dir=tmp_path).check_data(["blimp_wh_island", "blimp_adjunct_island"])
