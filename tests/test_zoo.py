"""The full zoo overlay (zoo.yaml): merging semantics, a valid merged configuration, every network buildable."""
import yaml

from flmlib.augment import AugmentConfig
from flmlib.models import build_model
from flmlib.paths import PROJECT_ROOT
from flmlib.train import config_for_model
from flmlib.zoo import apply, main, merged_study, overlay


def test_overlay_merges_mappings_replaces_values_and_removes_nulls():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3}
    out = overlay(base, {"a": {"y": [3], "z": 4}, "b": None, "d": {"e": 5}})
    assert out == {"a": {"x": 1, "y": [3], "z": 4}, "c": 3, "d": {"e": 5}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3}  # untouched


def test_the_full_zoo_is_a_valid_study_whose_networks_build_and_fit_their_crops():
    study = merged_study(PROJECT_ROOT / "params.yaml", PROJECT_ROOT / "zoo.yaml")
    assert {"resnet50", "efficientnet_b0", "naimishnet", "net2", "mobilenet", "onet"} <= set(study.models)
    assert study.models["onet"].recipe == "faithful" and study.models["resnet50"].recipe == "wflw"
    for model_id, entry in study.models.items():
        model = build_model(entry.architecture, **entry.architecture_kwargs)
        crop = study.train_crop_size(model_id)
        box = crop / study.prepare.context_factor
        assert model.input_size <= box, f"{model_id}: {model.input_size} px input from a {box:g} px box"
        config = config_for_model(study, model_id)
        AugmentConfig(**config.augmentation.as_dict()).check(crop, study.prepare.context_factor, model.input_size)


def test_apply_keeps_comments_and_refuses_a_broken_overlay(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((PROJECT_ROOT / "params.yaml").read_text())
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("models:\n  onet:\n    recipe: no_such_recipe\n")
    assert main([str(zoo), "--params", str(params)]) == 2
    assert "models.onet.recipe" in capsys.readouterr().err
    assert params.read_text() == (PROJECT_ROOT / "params.yaml").read_text()  # nothing written
    zoo.write_text((PROJECT_ROOT / "zoo.yaml").read_text())
    study = apply(params, zoo)
    text = params.read_text()
    assert "# The study's configuration" in text and "# Wing loss width" in text  # comments survive
    assert yaml.safe_load(text)["models"]["resnet50"]["architecture_kwargs"]["depth"] == 50
    assert study.models["resnet50"].train_data == "crops/448"
    assert main([str(tmp_path / "missing.yaml"), "--params", str(params)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
