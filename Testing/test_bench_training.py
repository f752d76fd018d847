"""The bench's networks of one family: trained where ``--reuse-models`` finds them, nothing else left."""

from ScribbleSegLib import protocol
from ScribbleSegLib.commands import bench
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.training import TrainOptions


def test_train_family_names_its_models_by_family_and_leaves_no_work_folder(tmp_path):
    vols = protocol.make_volumes(4, seed=0, shape=(12, 48, 48), family="b")
    (tmp_path / "munet.model").write_text("another run's file")  # a plain <arch>.model is not the family's

    options = TrainOptions(scale_jitter=0.2)
    paths = bench.train_family(vols, "b", tmp_path, minutes=0.03, device="cpu", max_iters=3, archs=("unet",),
                               options=options)

    assert paths == {"unet": tmp_path / "unet_b.model"}
    training = load_model(paths["unet"], device="cpu").meta["training"]
    assert training["steps"] <= 3
    assert training["options"]["scale_jitter"] == 0.2, "the options reach the training"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["munet.model", "unet_b.model"]
    assert (tmp_path / "munet.model").read_text() == "another run's file"


def test_reused_networks_must_have_learnt_from_this_runs_phantoms(tmp_path, caplog):
    # --reuse-models took networks of a bench with another --seed and --shape, and computed its tables with them.
    import pytest

    from ScribbleSegLib.errors import ScribbleSegError

    vols = protocol.make_volumes(4, seed=0, shape=(12, 48, 48), family="b")
    bench.train_family(vols, "b", tmp_path, minutes=0.03, device="cpu", max_iters=2, archs=("unet",))
    reused = {"b": {"unet": load_model(tmp_path / "unet_b.model", device="cpu")}}
    bench._check_reused(reused, {"b": vols})  # the same phantoms: taken
    other = protocol.make_volumes(4, seed=3, shape=(12, 48, 48), family="b")
    with pytest.raises(ScribbleSegError, match=r"^--reuse-models: unet_b.model learnt from other phantoms than this "
                                               r"run's training volumes .*--seed and --shape"):
        bench._check_reused(reused, {"b": other})
    # A model that states no training volumes (an older file) is taken with a warning.
    reused["b"]["unet"].meta["provenance"].pop("data_sha256")
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        bench._check_reused(reused, {"b": other})
    assert "unet_b.model states no training volumes" in caplog.text
