"""Config checks that run before anything is built (in-process; the CLI tests cover the printed line)."""

from __future__ import annotations

import pytest
import torch

from mpl_runner.core.errors import UserError
from mpl_runner.gates.validate import validate

BAD = {
    "dataset.num_labeled=5": "multiple of 2",
    "dataset.num_labeled=2002": "from 2 to 2000",
    "dataset.points_per_class=0": "dataset.points_per_class=0",
    "dataset.noise=-0.1": "dataset.noise=-0.1",
    "dataset.unlabeled_batch_size=0": "dataset.unlabeled_batch_size=0",
    "model.activation=swish": "one of gelu, relu, sigmoid, silu, tanh",
    "model.hidden_sizes=[64,0]": "model.hidden_sizes",
    "optim.name=lbfgs": "one of sgd, adam",
    "optim.lr=-0.1": "optim.lr=-0.1",
    "optim.momentum=1.0": "[0, 1)",
    "optim.schedule=step": "one of constant, cosine",
    "trainer.eval_interval=0": "trainer.eval_interval=0",
    "method.pseudo_label=hard": "argmax, sample, soft",
    "method.pseudo_label=soft": "unless method.feedback=none",
    "method.feedback=both": "old_minus_new, new_minus_old, none",
    "method.uda.threshold=1.5": "[0, 1]",
    "method.uda.temperature=0": "method.uda.temperature=0.0",
    "method.student_wait_steps=500": "0 to 499",
    "method.finetune.steps=500": "0 to 499",
    "method.finetune.batch_size=0": "method.finetune.batch_size=0",
    "device=tpu": "auto, cpu, cuda or cuda:N",
}


@pytest.mark.parametrize("override,message", BAD.items(), ids=list(BAD))
def test_bad_value_names_the_key_and_what_is_allowed(make_cfg, override, message):
    with pytest.raises(UserError, match=None) as err:
        validate(make_cfg(override))
    assert message in str(err.value)
    assert override.split("=")[0] in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused(make_cfg):
    with pytest.raises(UserError, match="CUDA is not available"):
        validate(make_cfg("device=cuda"))


def test_exact_variant_takes_only_the_derived_sign(make_cfg):
    exact = ["method.variant=exact", "method.pseudo_label=soft", "optim.momentum=0"]
    validate(make_cfg(*exact, "method.feedback=none"))
    with pytest.raises(UserError, match="method.feedback"):
        validate(make_cfg(*exact, "method.feedback=new_minus_old"))


def test_a_finetuning_batch_larger_than_the_labeled_set_is_refused(make_cfg):
    validate(make_cfg("method.finetune.steps=10", "method.finetune.batch_size=12"))
    with pytest.raises(UserError, match=r"method.finetune.batch_size=13 is not allowed: 1 to 12"):
        validate(make_cfg("method.finetune.steps=10", "method.finetune.batch_size=13"))


def test_each_method_brings_its_own_rules_through_its_registry_entry(make_cfg):
    """MPL's rules live beside MPL (methods/mpl_config.py) and reach validate.py through its registry entry: exact
    MPL is refused under torchrun (``check_distributed``), only a method that ``trains_student`` takes a
    ``student_model`` (the message names it), and MPL's warm-up warnings count its finetuning steps out, where the
    other methods keep one lr schedule over trainer.steps (``lr_warnings``)."""
    from mpl_runner.core.distributed import World
    from mpl_runner.core.errors import ConfigError
    from mpl_runner.gates.validate import config_warnings, validate_world

    mpl = make_cfg("method.variant=exact", "method.pseudo_label=soft", "optim.momentum=0", "trainer.amp=none",
                   "trainer.steps=300", "method.finetune.steps=100", "optim.warmup_steps=250")
    validate_world(mpl, World(0, 1))  # one process: allowed
    with pytest.raises(ConfigError, match="method.variant='exact' is not allowed: first_order under torchrun"):
        validate_world(mpl, World(0, 2))
    warned = config_warnings(mpl, "cpu", "none", False)
    assert any("the 200 steps its lr schedule spans (trainer.steps - method.finetune.steps)" in w for w in warned)
    uda = make_cfg("method=uda", "model@student_model=mlp", "trainer.steps=300", "optim.warmup_steps=300")
    with pytest.raises(ConfigError, match=r"null with method=uda \(only method=mpl trains a student"):
        validate(uda)
    assert any("the 300 steps its lr schedule spans (trainer.steps)" in w for w in config_warnings(uda, "cpu", "none",
                                                                                                    False))
