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
