"""The one loader of params.yaml: typed sections, and bad values reported with their key."""
import pytest
import yaml

from flmlib.config import ConfigError, MethodSpec, load_config, parse_config
from flmlib.paths import PROJECT_ROOT

RAW = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def _with(path: str, value):
    """A copy of params.yaml with the dotted key ``path`` set to ``value`` (None deletes it)."""
    import copy

    raw = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


def test_the_study_params_load_whole():
    study = load_config()
    assert study.reference in study.method_ids
    assert set(study.models) <= set(study.method_ids) and set(study.methods) <= set(study.method_ids)
    assert {"test_300w_common", "test_aflw2000", "test_aflw2000_lmbox", "test_youtube"} <= set(study.test_sets)
    assert study.test_sets["test_aflw2000_lmbox"].boxes == "landmarks"
    assert study.train.recipes[study.models["onet"].recipe].epochs >= 1


@pytest.mark.parametrize("path, value, message", [
    ("prepare.upsample", -1, r"prepare\.upsample: .*greater than or equal to 0.*-1"),
    ("data.youtube_test_share", 1.5, r"data\.youtube_test_share"),
    ("prepare.upsampel", 1, r"prepare\.upsampel: Extra inputs"),
    ("test_sets.test_aflw2000.boxes", "random", r"test_sets\.test_aflw2000\.boxes"),
    ("test_sets.test_aflw2000.yaw_bins", [60, 30], r"test_sets\.test_aflw2000.*yaw_bins"),
    ("models.onet.recipe", "slow", r"models\.onet\.recipe: 'slow' is not one of train\.recipes"),
    ("methods.dlib.points", "dlib5", r"methods\.dlib.*points='dlib5'"),
    ("reference", "sift", r"reference: 'sift' is not one of the methods"),
    ("train.recipes.fast.lr", 0, r"train\.recipes\.fast\.lr"),
    ("compare", None, r"compare: missing"),
    ("models.onet_youtube_jaw_masked.ignore_points", {"youtube": ["ears"]}, r"ignore_points\.youtube\.0"),
    ("models.onet_youtube_jaw_masked.ignore_points", {"kaggle": ["jaw"]}, r"ignore_points\.kaggle"),
    ("models.onet_youtube_jaw_masked.ablation_of", "onet2", r"ablation_of: 'onet2' is not another model entry"),
    ("partial_labels.test_set", "test_kaggle", r"partial_labels\.test_set: 'test_kaggle' is not one of the test sets"),
    ("partial_labels.reduced_share", 1.0, r"partial_labels\.reduced_share"),
    ("partial_labels.recipe", "slow", r"partial_labels\.recipe: 'slow' is not one of train\.recipes"),
    ("video.method", "openface", r"video\.method: 'openface' is not one of the methods"),
    ("video.min_cutoff", 0, r"video\.min_cutoff"),
    ("train.recipes.fast.schedule", "plateau2", r"train\.recipes\.fast\.schedule"),
    ("two_pass.onet_two_pass.first", "sift", r"two_pass\.onet_two_pass\.first: 'sift' is not one of the models"),
    ("two_pass.onet_two_pass.train_data", "prepared", r"two_pass\.onet_two_pass\.train_data: 'prepared' is not one"),
    ("two_pass.onet_two_pass.augmentation", {"blur": 1.0}, r"two_pass\.onet_two_pass\.augmentation\.blur"),
    ("models.onet.train_data", "crops/aligned96", r"aligned crops are for two_pass entries"),
    ("crops.aligned_sizes", [8], r"crops.*8"),
    ("two_pass.onet_two_pass_seed1.first", "onet", r"two_pass\.onet_two_pass_seed1: a repeat of 'onet_two_pass' must "
                                                   r"train it the same way; \['first'\] differ"),
    ("two_pass.onet_two_pass_seed1.seed", 0, r"two_pass\.onet_two_pass_seed1\.seed: .* needs another seed"),
    ("two_pass.onet_two_pass_seed1.repeat_of", "onet", r"repeat_of: 'onet' is not a two_pass entry of its own"),
    ("models.efficientnet_lite0_seed1.augmentation", {"rotate": 1.0}, r"\['augmentation'\] differ"),
])
def test_a_bad_value_is_named_by_its_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(path, value), "params.yaml")


def test_a_whole_study_error_does_not_dump_the_file():
    with pytest.raises(ConfigError) as info:
        parse_config(_with("reference", "sift"), "params.yaml")
    message = str(info.value)
    assert len(message) < 600 and "'data':" not in message and "youtube_test_share" not in message


def test_ablations_and_repeats_stay_off_the_leaderboard():
    study = load_config()
    assert study.ablations() == {"onet": ["onet_youtube_jaw_masked"]}
    assert "onet_youtube_jaw_masked" not in study.leaderboard_ids
    for model_id, runs in study.repeats().items():  # seed repeats of models: and of two_pass: entries
        assert runs[0] == model_id and model_id in study.leaderboard_ids
        assert not set(runs[1:]) & set(study.leaderboard_ids)
        assert len({study.seed_of(r) for r in runs}) == len(runs)
    assert "onet_two_pass_seed1" in study.repeats().get("onet_two_pass", [])
    assert study.models["onet_youtube_jaw_masked"].ignore_points == {"youtube": ["jaw"]}


def test_a_model_id_cannot_also_be_a_method():
    raw = _with("methods.onet", {"kind": "dlib_predictor"})
    with pytest.raises(ConfigError, match=r"ids \['onet'\] are also models"):
        parse_config(raw, "params.yaml")


def test_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: params file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_method_specs_of_models_and_methods():
    study = load_config()
    onet = study.method_spec("onet")
    assert onet.kind == "cnn" and onet.model == "onet" and onet.options["checkpoint"] == "models/onet.pt"
    assert onet.trained_on and onet.points == "ibug68"
    mediapipe = study.method_spec("mediapipe")
    assert mediapipe.mapped and mediapipe.caveats
    with pytest.raises(KeyError, match="unknown method 'sift'"):
        study.method_spec("sift")
    with pytest.raises(ValueError, match="kind='Not A Module'"):
        MethodSpec(id="x", kind="Not A Module")


def test_a_key_that_dvcs_run_cache_ignores_is_refused():
    import copy

    import yaml

    from flmlib.config import ConfigError, parse_config
    from flmlib.paths import PROJECT_ROOT

    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    bad = copy.deepcopy(raw)
    bad["models"]["onet"]["architecture_kwargs"] = {"size": 48}
    with pytest.raises(ConfigError, match=r"models\.onet\.architecture_kwargs\.size: DVC's run cache ignores"):
        parse_config(bad, "params.yaml")
    parse_config(raw, "params.yaml")


def test_a_two_pass_entry_is_a_leaderboard_method_trained_like_a_model():
    from flmlib.train import config_for_model

    study = load_config()
    assert "onet_two_pass" in study.leaderboard_ids
    spec = study.method_spec("onet_two_pass")
    assert spec.kind == "cnn" and spec.options["checkpoint"] == "models/onet_two_pass.pt"
    run = config_for_model(study, "onet_two_pass")
    entry = study.two_pass["onet_two_pass"]
    assert run.augmentation.shift == entry.augmentation["shift"] != study.train.aug_shift  # its own strengths
    assert run.augmentation.flip == study.train.aug_flip                                 # the rest shared
    assert study.train_crop_size("onet_two_pass") == 96
    assert config_for_model(study, "onet_two_pass_seed2").seed == study.seed_of("onet_two_pass_seed2") == 2
    with pytest.raises(ConfigError, match=r"two_pass: ids \['onet'\] are also models"):
        parse_config(_with("two_pass.onet", {**RAW["two_pass"]["onet_two_pass"]}), "params.yaml")
