"""UA-FER as a user runs it: CLIP files in the formats users have, refusals in one line,
prompts, the frozen teacher and text tower, and the method's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ferbench_uafer.relation import relation_scores
from ferbench_uafer.towers import prompts, tokenize, wants_quick_gelu

from ferbench.checkpoint import trainable_state
from ferbench.errors import ConfigError, DataError
from ferbench.testing import build_model, tiny_context
from uafer_fixtures import (TEST_ARCH, TEST_OVERRIDES, clip_files,  # noqa: F401
                            isolated_cache, one_thread)


def context(*overrides, **kw):
    return tiny_context("uafer", [*TEST_OVERRIDES, *overrides], **kw)


def built(*overrides, **kw):
    method, ctx = context(*overrides, **kw)
    return method, ctx, build_model(method, ctx)


def first_batch(method, ctx, n=8):
    batch = next(iter(ctx.iterate("train", views=("none",), batch_size=n)))
    batch["views"] = {"weak": batch["views"]["none"]}
    return batch


# ---- CLIP files -----------------------------------------------------------------------------
def test_both_file_formats_load_the_same_towers(clip_files):
    _, _, a = built(f"clip_weights={clip_files / 'open_clip.pt'}", "quick_gelu=false")
    _, _, b = built(f"clip_weights={clip_files / 'openai.pt'}", "quick_gelu=false")
    want = torch.load(clip_files / "open_clip.pt")
    for name, t in a.clip.state_dict().items():
        if name in want:
            torch.testing.assert_close(t.float(), want[name].float())
    # OpenAI's archive is fp16: the same tensors to fp16 precision.
    for (name, x), y in zip(a.student.state_dict().items(), b.student.state_dict().values()):
        torch.testing.assert_close(x, y, atol=2e-3, rtol=1e-3, msg=name)
    torch.testing.assert_close(a.text, b.text, atol=2e-2, rtol=1e-2)


def test_the_student_starts_as_the_teacher_and_the_text_comes_from_the_file(clip_files):
    method, ctx, model = built(f"clip_weights={clip_files / 'open_clip.pt'}")
    x = torch.rand(2, 3, 32, 32)
    g, _ = model.student(x)
    torch.testing.assert_close(g, model.teacher(x).float())
    loaded = [w for w in ctx._weights_log if str(w.get("module", "")).startswith("clip")]
    assert loaded[0]["init"] == "checkpoint" and loaded[0]["file"].endswith("open_clip.pt")
    assert method.extra_results()["clip_init"] == "checkpoint"


def test_quick_gelu_is_openais_for_its_archive_and_open_clips_gelu_otherwise(clip_files):
    assert wants_quick_gelu("auto", "ViT-B-16", clip_files / "openai.pt")
    assert not wants_quick_gelu("auto", "ViT-B-16", clip_files / "open_clip.pt")
    assert not wants_quick_gelu("auto", "ViT-B-16", None)
    assert wants_quick_gelu("auto", "ViT-B-16-quickgelu", None)
    assert wants_quick_gelu("true", "ViT-B-16", None)


def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_file(clip_files):
    method, ctx = context(f"clip_weights={clip_files / 'other.pt'}")
    with pytest.raises(DataError, match="other.pt") as e:
        method.build(ctx)
    assert "\n" not in str(e.value) and "does not fit" in str(e.value)


def test_a_file_that_is_no_checkpoint_and_a_missing_file_are_refused(clip_files, tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    for path, words in ((junk, "notes.pt"), (tmp_path / "absent.pt", "absent.pt")):
        method, ctx = context(f"clip_weights={path}")
        with pytest.raises(DataError, match=words):
            method.build(ctx)


def test_no_clip_weights_says_so_and_records_random_towers(clip_files, capsys):
    method, ctx, _ = built()
    assert "no clip_weights" in capsys.readouterr().err
    entry = [w for w in ctx._weights_log if str(w.get("module", "")).startswith("clip")][0]
    assert entry["init"] == "random" and entry["file"] is None
    info = method.extra_results()
    assert info["clip_init"] == "random" and "random" in info["warning"]


def test_weights_takes_only_a_ferbench_file_and_backbone_names_an_open_clip_tower(clip_files):
    method, ctx = context(f"weights={clip_files / 'open_clip.pt'}")
    with pytest.raises(ConfigError, match="clip_weights"):
        method.build(ctx)
    with pytest.raises(ConfigError, match="not an open_clip model"):
        context("backbone=resnet18")
    method, _ = context()
    assert method.config.clip_arch == TEST_ARCH


def test_an_unknown_architecture_and_too_many_patches_are_refused(clip_files):
    with pytest.raises(ConfigError, match="ViT-Q-99"):
        context("backbone=clip:ViT-Q-99")
    method, ctx = context("topk=17")
    with pytest.raises(ConfigError, match="16 patches"):
        method.build(ctx)


# ---- prompts and the frozen towers ------------------------------------------------------------
def test_prompts_use_the_codes_words_by_default_and_any_template():
    classes = ("neutral", "happiness", "disgust", "anger")
    assert prompts(classes, "{}") == ["neutral", "happy", "disgusted", "anger"]
    assert prompts(classes[:1], "a photo of a {} face") == ["a photo of a neutral face"]
    assert prompts(("anger",), "{}", {"anger": "angry"}) == ["angry"]
    with pytest.raises(ConfigError, match="{}"):
        prompts(classes, "a face")



@pytest.mark.parametrize("override", ["class_words.happiness=joyful",
                                      "class_words={happiness: joyful}",
                                      "method.class_words.happiness=joyful"])
def test_a_user_renames_a_class_word_from_the_command_line(override):
    from ferbench.config import compose_run, to_method_config
    from ferbench.plugins import registry

    cls = registry().get("methods", "uafer")
    cfg = to_method_config(cls, compose_run("uafer", cls, "quick", {}, [override]))
    assert prompts(("neutral", "happiness"), "{}", cfg.class_words) == ["neutral", "joyful"]


def test_a_misspelt_class_in_class_words_is_refused_naming_it():
    with pytest.raises(ConfigError, match="class_words.hapiness: not a class of this run"):
        prompts(("neutral", "happiness"), "{}", {"hapiness": "joy"})

def test_the_tokenizer_works_offline_and_refuses_a_prompt_it_would_cut():
    tokens = tokenize(["happy", "surprise"], 16)
    assert tokens.shape == (2, 16) and (tokens[:, 0] == tokens[0, 0]).all()
    with pytest.raises(ConfigError, match="shorten"):
        tokenize(["a very long prompt " * 5], 16)


def test_the_text_embeddings_are_computed_once_not_per_step(clip_files):
    method, ctx, model = built()
    calls = []
    encode = model.clip.encode_text
    model.clip.encode_text = lambda *a, **k: calls.append(1) or encode(*a, **k)
    batch = first_batch(method, ctx)
    for _ in range(3):
        method.training_step(model, batch, ctx).backward()
    method.predict(model.eval(), batch["views"]["weak"])
    assert calls == [] and model.text.shape == (ctx.num_classes, 16)


def test_teacher_and_text_tower_are_frozen_and_out_of_checkpoints(clip_files):
    method, ctx, model = built()
    assert model.clip in ctx.frozen_modules
    assert not any(p.requires_grad for p in model.clip.parameters())
    state = trainable_state(model, ctx.frozen_modules)
    assert state and not any(k.startswith("clip.") or k == "text" for k in state)
    batch = first_batch(method, ctx)
    model.train()
    method.training_step(model, batch, ctx).backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert not model.clip.training  # stays in eval mode when the model trains


def test_gradients_reach_the_trained_blocks_and_not_the_frozen_ones(clip_files):
    method, ctx, model = built("fix_layer=1")
    method.training_step(model, first_batch(method, ctx), ctx).backward()
    v = model.student.visual
    assert v.conv1.weight.grad is None and not v.conv1.weight.requires_grad
    assert v.transformer.resblocks[1].attn.in_proj_weight.grad.abs().sum() > 0
    assert v.proj.grad.abs().sum() > 0


def test_distillation_and_the_kl_term_enter_the_loss_only_when_weighted(clip_files):
    for overrides, logged, absent in (((), {"loss_edl", "loss_kd"}, {"loss_kl"}),
                                      (("kd_weight=0",), {"loss_edl"}, {"loss_kd", "loss_kl"}),
                                      (("edl_variant=edl_kl",), {"loss_kl"}, set())):
        method, ctx, model = built(*overrides)
        ctx.epoch = 5
        method.training_step(model, first_batch(method, ctx), ctx)
        row = ctx.end_epoch()
        assert logged <= set(row) and not absent & set(row), overrides


# ---- outputs ----------------------------------------------------------------------------------
def test_predictions_are_the_dirichlet_mean_with_u_as_uncertainty(clip_files):
    method, ctx, model = built()
    model.eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        pred = method.predict(model, x)
        g, patches = model(method._pixels(x))
        z = relation_scores(g, patches, model.text, 3, method.config.alpha_local)
    evidence = torch.relu(z)
    torch.testing.assert_close(pred.probs, (evidence + 1) / (evidence + 1).sum(1, keepdim=True))
    torch.testing.assert_close(pred.uncertainty, ctx.num_classes / (evidence + 1).sum(1))
    torch.testing.assert_close(pred.extras["dirichlet_strength"], (evidence + 1).sum(1))


def test_the_test_pass_normalises_text_unless_told_to_reproduce_the_code(clip_files):
    x = torch.rand(4, 3, 32, 32)
    outs = {}
    for flag in ("true", "false"):
        torch.manual_seed(0)
        method, ctx, model = built(f"test_text_norm={flag}", "evidence=softplus")
        model.eval()
        with torch.no_grad():
            plain = method.predict(model, x).probs
            model.text.mul_(torch.linspace(0.5, 3.0, ctx.num_classes)[:, None])
            outs[flag] = (plain, method.predict(model, x).probs)
    torch.testing.assert_close(outs["true"][1], outs["true"][0])   # scale-free, as in training
    assert not torch.allclose(outs["false"][1], outs["false"][0], atol=1e-4)


def test_noise_scores_are_u_and_one_minus_p_of_the_given_label(clip_files):
    method, ctx, model = built()
    scores = method.noise_scores(model, ctx)
    assert list(scores) == ["u", "1-p(y)"] and model.training
    images = ctx.train.images(torch.arange(len(ctx.train)), "none")
    model.eval()
    with torch.no_grad():
        pred = method.predict(model, images)
    torch.testing.assert_close(scores["u"], pred.uncertainty)
    given = ctx.train.labels
    torch.testing.assert_close(scores["1-p(y)"],
                               1 - pred.probs.gather(1, given[:, None]).squeeze(1))


def test_the_rate_is_set_every_step_warm_up_then_cosine_in_every_group(clip_files):
    method, ctx, model = built("warmup=0.5", "lr=1e-2", "min_lr=1e-6", "layer_decay=0.5",
                               epochs=2)
    (spec,) = method.configure_optimizers(model, ctx)
    groups = spec.optimizer.param_groups
    assert groups[0]["lr_scale"] == 1.0 and len({g["lr_scale"] for g in groups}) > 1
    seen = []
    for _ in range(2 * ctx.steps_per_epoch):
        seen.append([g["lr"] for g in groups])
        spec.optimizer.step()
        spec.scheduler.step()
    spe = ctx.steps_per_epoch
    for i, g in enumerate(groups):
        scale = g["lr_scale"]
        assert seen[0][i] == 0.0
        assert seen[spe // 2][i] == pytest.approx(1e-2 * scale * (spe // 2) / spe)
        assert seen[spe][i] == pytest.approx(1e-2 * scale)
        assert all(a[i] >= b[i] for a, b in zip(seen[spe:], seen[spe + 1:]))
    # one step past the run: the floor min_lr, scaled like the rest
    assert groups[-1]["lr"] == pytest.approx(1e-6 * groups[-1]["lr_scale"])


# ---- the contract and the command line ----------------------------------------------------------
@pytest.mark.slow
def test_uafer_meets_the_contract(clip_files, tmp_path):
    from ferbench.testing import check_method

    report = check_method("uafer", steps=10, workdir=tmp_path,
                          overrides=["image_size=32", "topk=3"])
    assert report["loss_last"] < report["loss_first"]
    assert report["resumed"]


@pytest.mark.slow
def test_a_user_runs_uafer_and_the_leaderboard_says_its_towers_were_random(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-c", "import sys; from ferbench.cli import main; sys.exit(main())",
           "run", "--method", "uafer", "--epochs", "1",
           "-o", "n_train=128", "-o", "n_test=64", "--out", str(out), "image_size=32",
           "topk=3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no clip_weights" in done.stderr
    (result,) = list(out.rglob("seed0.json"))
    record = json.loads(result.read_text())
    assert record["method_results"]["clip_init"] == "random"
    assert record["config"]["method"]["backbone"] == "clip:uafer-tiny"
    board = (out / "leaderboard.md").read_text()
    assert "clip:uafer-tiny" in board and "random" in board
    arrays = np.load(Path(result).with_suffix(".npz"))
    u = arrays["test_uncertainty"]
    assert u.shape == (64,) and (u >= 0.5).all() and (u <= 1).all()
