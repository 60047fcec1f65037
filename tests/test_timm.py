"""model=timm (any timm architecture, a local weights file), MPL's own student (model@student_model=...), and the
built-in models on other image sizes. timm's tiny test models (test_resnet, test_efficientnet, test_vit) keep this
quick on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from conftest import cli_in_process
from mpl_runner.record import checkpoint, model_file
from mpl_runner.core.errors import ConfigError
from mpl_runner.methods.mpl import frozen_batchnorm_stats
from mpl_runner.models import build_model, handed_out_model_config, model_node
from mpl_runner.gates.validate import validate
from test_bad_inputs import tree
from test_cifar10_data import write_fake_cifar10
from test_cifar10_run import TINY_CIFAR

TIMM = ["model=timm", "model.name=test_resnet"]
STUDENT = ["model@student_model=small_cnn", "student_model.widths=[8,16]"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root)
    return root


def cifar_args(root: Path, *extra: str) -> list[str]:
    """The tiny CIFAR-10 run (its WRN-10-1 unless ``extra`` chooses another model)."""
    own_model = any(e.startswith("model=") for e in extra)
    tiny = [a for a in TINY_CIFAR if not (own_model and a.startswith("model"))]
    return [*tiny, f"dataset.root={root}", "trainer.progress=false", *extra]


def refused(args: list[str], tmp: Path, monkeypatch, capsys) -> str:
    """``mpl-run *args`` (in-process) refused as a user's mistake: exit 2, one line, nothing left in ``tmp``."""
    before = tree(tmp)
    status, _out, err = cli_in_process([*args, f"hydra.run.dir={tmp / 'run'}"], tmp, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("mpl-run: error: "), (status, err)
    assert tree(tmp) == before, "files were left behind"
    return lines[0]


# --- end to end ---------------------------------------------------------------------------------------------------


def test_a_timm_teacher_and_a_small_cnn_student_train_through_the_cli(cifar_root, tmp_path, monkeypatch, capsys):
    args = cifar_args(cifar_root, "method=mpl", *TIMM, *STUDENT, "trainer.checkpoint_interval=2")
    status, _out, err = cli_in_process([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["handed_out"] == "student"
    assert 0 <= metrics["test/teacher/acc"] <= 1 and 0 <= metrics["test/student/acc"] <= 1
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt", torch.device("cpu"))
    teacher, student = state["method"]["models"]["teacher"], state["method"]["models"]["student"]
    assert teacher["fc.weight"].shape == (10, 96)  # test_resnet's head, for the 10 classes
    assert student["0.0.weight"].shape == (8, 3, 3, 3) and student["8.weight"].shape == (10, 16)  # small_cnn [8, 16]
    assert state["config"]["student_model.name"] == "small_cnn" and state["config"]["model.name"] == "test_resnet"
    # The handed-out model is the student's: model.json rebuilds it as a small_cnn, without Hydra or the run's config.
    model, meta = model_file.load_model(run_dir)
    assert meta["model_option"] == "small_cnn" and meta["model"]["widths"] == [8, 16]
    assert torch.equal(model.state_dict()["8.weight"], student["8.weight"])

    # The same command goes on from (here: has finished) its checkpoint; another student is refused.
    status, out, err = cli_in_process([*args, f"trainer.resume={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    line = refused([*args[:-1], "student_model.widths=[8,32]", f"trainer.resume={run_dir}"], tmp_path,
                   monkeypatch, capsys)
    assert "student_model.widths" in line and "another config" in line


def test_a_checkpoint_from_before_student_model_resumes_only_without_one(make_cfg):
    """Checkpoints written before the key existed know nothing of it: they were written with the student the same
    model as the teacher, i.e. student_model=null, its default."""
    cfg = make_cfg("dataset=digits", "model=small_cnn")
    old = {"step": 0,
           "config": {k: v for k, v in checkpoint.identity(cfg).items() if not k.startswith("student_model")}}
    defaults = make_cfg("dataset=digits", "model=small_cnn")
    checkpoint.check_config(old, cfg, Path("last.pt"), defaults)
    with pytest.raises(checkpoint.CheckpointError, match="student_model"):
        checkpoint.check_config(old, make_cfg("dataset=digits", "model=small_cnn", "model@student_model=mlp"),
                                Path("last.pt"), defaults)


# --- the student ----------------------------------------------------------------------------------------------------


def test_the_student_gets_its_own_model_and_is_handed_out(make_cfg):
    cfg = make_cfg("dataset=digits", "model=small_cnn", *STUDENT)
    validate(cfg)
    assert OmegaConf.to_container(cfg.student_model)["widths"] == [8, 16] and list(cfg.model.widths) == [32, 64]

    class Handing:
        handed_out = "student_ema"

    assert handed_out_model_config(cfg, Handing()) is cfg.student_model
    assert handed_out_model_config(cfg, "teacher") is cfg.model
    plain = make_cfg("dataset=digits", "model=small_cnn")
    assert plain.student_model is None and handed_out_model_config(plain, "student") is plain.model


def test_a_model_node_is_rebuilt_from_its_option_and_values(make_cfg):
    """What an export records of the handed-out model (its option, its values) builds the same model."""
    from mpl_runner.core.registry import entry_of

    cfg = make_cfg("dataset=digits", "model=small_cnn", "model@student_model=timm", "student_model.name=test_resnet")
    for node in (cfg.model, cfg.student_model):
        rebuilt = model_node(entry_of("model", node).name, OmegaConf.to_container(node))
        torch.manual_seed(0)
        first = build_model(node, (1, 8, 8), 10).state_dict()
        torch.manual_seed(0)
        again = build_model(rebuilt, (1, 8, 8), 10).state_dict()
        assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("overrides,key", [
    (["method=supervised", *STUDENT], "student_model"),
    (["method=uda", *STUDENT], "student_model"),
    ([*STUDENT[:1], "student_model.widths=[8,8,8,8]"], "student_model.widths"),  # 4 stages: 8x8 -> 0
    ([*STUDENT[:1], "student_model.name=mlp"], "student_model.name"),
    (["model@student_model=timm", "student_model.name=resnet_18"], "student_model.name"),
])
def test_a_student_is_checked_like_the_model(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("dataset=digits", "model=small_cnn", *overrides))
    assert err.value.key == key, err.value


def test_a_student_with_another_method_is_one_line(cifar_root, tmp_path, monkeypatch, capsys):
    line = refused(cifar_args(cifar_root, "method=supervised", *STUDENT), tmp_path, monkeypatch, capsys)
    assert "student_model='small_cnn'" in line and "only method=mpl" in line


# --- model=timm ---------------------------------------------------------------------------------------------------


def test_channels_and_classes_come_from_the_data(make_cfg):
    cfg = make_cfg("dataset=digits", "model=timm", "model.name=test_resnet", "model.drop_rate=0.1")
    validate(cfg)
    model = build_model(cfg.model, (1, 8, 8), 10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10) and model.drop_rate == 0.1


def test_a_fixed_size_architecture_is_built_for_the_data(make_cfg):
    cfg = make_cfg("dataset=cifar10_4k", "model=timm", "model.name=test_vit")
    validate(cfg)
    assert build_model(cfg.model, (3, 32, 32), 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"model.name='test_vit'.*1x8x8 images.*patch size"):
        validate(make_cfg("dataset=digits", "model=timm", "model.name=test_vit"))
    validate(make_cfg("dataset=digits", "model=timm", "model.name=test_vit", "+model.kwargs.patch_size=4"))


def test_an_unknown_architecture_is_one_line_with_close_names(cifar_root, tmp_path, monkeypatch, capsys):
    line = refused(cifar_args(cifar_root, "model=timm", "model.name=resnet_18"), tmp_path, monkeypatch, capsys)
    assert "model.name='resnet_18'" in line and "did you mean resnet18" in line


@pytest.mark.parametrize("kwargs,match", [("+model.kwargs.num_classes=3", "num_classes comes from"),
                                          ("+model.kwargs.pretrained=true", "pretrained comes from"),
                                          ("+model.kwargs.no_such_argument=1", "unexpected keyword")])
def test_kwargs_that_timm_would_not_take_or_that_are_set_elsewhere(make_cfg, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate(make_cfg("dataset=digits", "model=timm", "model.name=test_resnet", kwargs))
    assert err.value.key == "model.kwargs"


def test_timm_batch_norm_is_frozen_for_the_students_extra_forwards():
    model = timm.create_model("test_efficientnet", num_classes=3).train()
    norms = [m for m in model.modules() if type(m).__name__ == "BatchNormAct2d"]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    with frozen_batchnorm_stats(model):
        model(torch.randn(4, 3, 16, 16))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    model(torch.randn(4, 3, 16, 16))  # (and outside the block they move)
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


# --- pretrained weights ---------------------------------------------------------------------------------------------


def weights_file(path: Path, kind: str, num_classes: int = 5, in_chans: int = 3, name: str = "test_resnet"):
    torch.manual_seed(1)
    state = timm.create_model(name, num_classes=num_classes, in_chans=in_chans).state_dict()
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_pretrained_weights_load_and_a_head_for_other_classes_stays_fresh(make_cfg, tmp_path, kind, caplog):
    path = tmp_path / f"w.{'safetensors' if kind == 'safetensors' else 'pt'}"
    theirs = weights_file(path, kind, num_classes=5)
    cfg = make_cfg("dataset=cifar10_4k", "model=timm", "model.name=test_resnet", f"model.pretrained={path}")
    validate(cfg)
    torch.manual_seed(2)
    with caplog.at_level("INFO", logger="mpl_runner"):
        ours = build_model(cfg.model, (3, 32, 32), 10).state_dict()
    body = [k for k in theirs if not k.startswith("fc.")]
    assert body and all(torch.equal(ours[k], theirs[k]) for k in body)
    assert ours["fc.weight"].shape == (10, 96) and ours["fc.bias"].shape == (10,)
    assert "kept fresh" in caplog.text and "fc.weight, fc.bias" in caplog.text
    same = build_model(cfg.model, (3, 32, 32), 5).state_dict()  # a head made for these classes is loaded too
    assert all(torch.equal(same[k], theirs[k]) for k in theirs)


def test_a_file_that_does_not_fit_is_one_line_naming_the_key_and_shapes(cifar_root, tmp_path, monkeypatch, capsys):
    weights_file(tmp_path / "grey.safetensors", "safetensors", in_chans=1)  # made for 1-channel images
    line = refused(cifar_args(cifar_root, "method=mpl", "model=timm", "model.name=test_resnet",
                              f"model.pretrained={tmp_path / 'grey.safetensors'}"), tmp_path, monkeypatch, capsys)
    assert "conv1.0.weight is 16x1x3x3 there but 16x3x3x3 here" in line, line


def test_a_student_file_that_does_not_fit_names_the_students_key(make_cfg, tmp_path):
    from mpl_runner.gates.validate import renamed

    weights_file(tmp_path / "other.pt", "torch", name="test_efficientnet")
    cfg = make_cfg("dataset=cifar10_4k", "model@student_model=timm", "student_model.name=test_resnet",
                   f"student_model.pretrained={tmp_path / 'other.pt'}")
    with pytest.raises(ConfigError, match=r"^student_model.pretrained=.*fit model.name=test_resnet: the file has no "
                                          r"conv1.0.weight \(the model's is 16x3x3x3\)"), renamed("student_model"):
        build_model(cfg.student_model, (3, 32, 32), 10)


@pytest.mark.parametrize("content,match", [
    ("missing", "there is no such file"),
    ("text", "neither"),
    ("object", "holds objects other than tensors"),
    ("list", "holds a list, not a dict of tensors"),
])
def test_a_missing_or_non_weights_file_is_one_line(make_cfg, tmp_path, content, match):
    path = tmp_path / "w.bin"
    if content == "text":
        path.write_text("just some text\n")
    elif content == "object":
        torch.save({"weight": torch.zeros(2), "where": Path("x")}, path)
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    cfg = make_cfg("dataset=cifar10_4k", "model=timm", "model.name=test_resnet", f"model.pretrained={path}")
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
        build_model(cfg.model, (3, 32, 32), 10)
    assert err.value.key == "model.pretrained" and "\n" not in str(err.value)


# --- the built-in models on other image sizes -----------------------------------------------------------------------


@pytest.mark.parametrize("option,shape", [("wrn28_2", (3, 64, 64)), ("small_cnn", (3, 32, 32)),
                                          ("small_cnn", (3, 64, 64)), ("small_cnn", (3, 48, 40))])
def test_built_in_models_take_any_image_size(make_cfg, option, shape):
    cfg = make_cfg(f"model={option}", *(["model.depth=10", "model.widen_factor=1"] if option == "wrn28_2" else []))
    model = build_model(cfg.model, shape, 7)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
