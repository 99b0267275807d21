"""`eda regenerate`, `eda extract-features` and `eda select` end to end on saved tiny models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import make_target
from test_data_common import PROMPTS, fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters.cli import main
from eda_adapters.data import CachedFeatureDataset, load_regenerated


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = make_tokenizer()
    base = make_target("qwen2", tie_word_embeddings=False)
    finetuned = copy.deepcopy(base)
    with torch.no_grad():  # the "fine-tune" moves the last layer's MLP only
        finetuned.model.layers[-1].mlp.down_proj.weight.mul_(3.0)
    for name, model in (("base", base), ("ft", finetuned)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in PROMPTS))
    return root


def test_regenerate_extract_select_reselect(models, tmp_path, capsys):
    regen = tmp_path / "regen"
    args = ["regenerate", "--target", str(models / "ft"), "--prompts", str(models / "prompts.jsonl"),
            "--output-dir", str(regen), "--max-new-tokens", "5", "--batch-size", "4"]
    assert main(args) == 0
    data = load_regenerated(regen)
    assert len(data) == len(PROMPTS) and data[0]["prompt"].endswith("<|assistant|>")
    assert f"regenerated {len(PROMPTS)} responses" in capsys.readouterr().out
    assert main(args) == 0  # finished run: returns the same data, nothing regenerated
    assert load_regenerated(regen)["input_ids"] == data["input_ids"]

    assert main(["extract-features", "--target", str(models / "ft"), "--dataset", str(regen),
                 "--output-dir", str(tmp_path / "feat"), "--batch-size", "4"]) == 0
    cached = CachedFeatureDataset(tmp_path / "feat")
    assert len(cached) == len(PROMPTS) and cached[0]["input_ids"].tolist() == data[0]["input_ids"]

    sel = tmp_path / "sel"
    assert main(["select", "--dataset", str(regen), "--base-target", str(models / "base"), "--target",
                 str(models / "ft"), "--budget", "3", "--strategy", "topk", "--output-dir", str(sel), "--plot"]) == 0
    selected = load_regenerated(sel)
    info = json.loads((sel / "selection.json").read_text())
    assert len(selected) == info["num_selected"] == 3 and (sel / "shift_hist.png").is_file()
    scores = [json.loads(line)["shift_score"] for line in (sel / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == len(PROMPTS) and all(s > 0 for s in scores)
    assert sorted(selected["shift_score"]) == sorted(scores)[-3:]

    # re-select from the saved scores at another budget, without any model, with the default strategy
    assert main(["select", "--dataset", str(sel / "scores.jsonl"), "--budget", "0.5",
                 "--output-dir", str(tmp_path / "sel2")]) == 0
    info = json.loads((tmp_path / "sel2" / "selection.json").read_text())
    assert info["strategy"] == {"name": "weighted", "temperature": 1.0, "seed": 0} and info["num_selected"] == 3
    assert len(load_regenerated(tmp_path / "sel2")) == 3
    assert main(["select", "--dataset", str(regen), "--budget", "2", "--strategy", "random",
                 "--output-dir", str(tmp_path / "rand")]) == 0
    assert len(load_regenerated(tmp_path / "rand")) == 2
    assert main(["select", "--dataset", str(sel / "scores.jsonl"), "--budget", "3", "--strategy", "cluster",
                 "--num-clusters", "2", "--output-dir", str(tmp_path / "clu")]) == 0
    info = json.loads((tmp_path / "clu" / "selection.json").read_text())
    assert info["strategy"] == {"name": "cluster", "num_clusters": 2, "seed": 0} and info["num_selected"] == 3


def test_cli_errors_are_one_line(models, tmp_path, capsys):
    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    prompts = str(models / "prompts.jsonl")
    assert "needs vLLM" in error(["regenerate", "--target", str(models / "ft"), "--prompts", prompts,
                                  "--output-dir", str(tmp_path / "v"), "--backend", "vllm"])
    assert "cannot load a model" in error(["regenerate", "--target", str(tmp_path / "nope"), "--prompts", prompts,
                                           "--output-dir", str(tmp_path / "n")])
    assert "larger than the dataset" in error(["select", "--dataset", prompts, "--budget", "100", "--strategy",
                                               "random", "--output-dir", str(tmp_path / "s")])
    assert "choose one of ('topk'" in error(["select", "--dataset", prompts, "--budget", "2", "--strategy", "best",
                                             "--output-dir", str(tmp_path / "s")])
    assert "temperature must be a finite number > 0" in error(
        ["select", "--dataset", prompts, "--budget", "2", "--strategy", "weighted", "--temperature", "0",
         "--output-dir", str(tmp_path / "s")])
    made = tmp_path / "made"
    made.mkdir()
    (made / "data.jsonl").write_text(Path(prompts).read_text())
    (made / "selection.json").write_text(json.dumps({"strategy": {"name": "topk", "seed": 0}}))
    assert "pass the scored pool" in error(["select", "--dataset", str(made), "--budget", "2", "--strategy",
                                            "random", "--output-dir", str(tmp_path / "s")])
    (made / "selection.json").write_text(json.dumps({"method": "shift"}))  # written before strategies had names
    assert "made with strategy 'topk'" in error(["select", "--dataset", str(made / "data.jsonl"), "--budget", "2",
                                                 "--strategy", "random", "--output-dir", str(tmp_path / "s")])
    assert "pass --base-target and --target" in error(["select", "--dataset", prompts, "--budget", "2",
                                                   "--output-dir", str(tmp_path / "s")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in error(["select", "--dataset", prompts, "--budget", "2", "--output-dir",
                                 str(tmp_path / "full")])


def test_saved_scores_reused_with_other_options_are_scored_again_or_refused(models, tmp_path, capsys):
    """Scores record their metric and targets (selection.json): reusing them with another metric or other targets
    scores again when the targets are passed, and is refused in one line naming both values when they are not."""
    rows = [{"input_ids": torch.randint(3, 97, (10,), generator=torch.Generator().manual_seed(i)).tolist(),
             "loss_mask": [0] * 4 + [1] * 6} for i in range(6)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    targets = ["--base-target", str(models / "base"), "--target", str(models / "ft")]

    def select(name, *extra):
        code = main(["select", "--budget", "2", "--strategy", "topk", "--output-dir", str(tmp_path / name), *extra])
        out, err = capsys.readouterr()
        return code, out, err.strip()

    def scores(name):
        record = json.loads((tmp_path / name / "selection.json").read_text())
        lines = (tmp_path / name / "scores.jsonl").read_text().splitlines()
        return record, [json.loads(line)["shift_score"] for line in lines]

    assert select("cosine", "--dataset", str(data), *targets)[0] == 0
    cosine_record, cosine = scores("cosine")
    assert cosine_record["metric"] == "cosine" and cosine_record["finetuned"]["fingerprint"]
    saved = str(tmp_path / "cosine" / "scores.jsonl")

    code, _, err = select("refused", "--dataset", saved, "--metric", "l2")
    assert code == 2 and "\n" not in err and "metric 'cosine' there, 'l2' now" in err and "--base-target" in err
    assert not (tmp_path / "refused").exists()

    code, out, _ = select("l2", "--dataset", saved, "--metric", "l2", *targets)
    l2_record, l2 = scores("l2")
    assert code == 0 and "scoring" in out and l2_record["metric"] == "l2" and l2 != cosine

    code, out, _ = select("same", "--dataset", saved, "--metric", "cosine", *targets)  # as made: reused
    same_record, same = scores("same")
    assert code == 0 and "scoring" not in out and same == cosine
    assert same_record["finetuned"] == cosine_record["finetuned"]

    swapped = ["--base-target", str(models / "ft"), "--target", str(models / "base")]
    code, out, _ = select("swapped", "--dataset", saved, *swapped)
    assert code == 0 and "base target" in out and scores("swapped")[0]["base"] == cosine_record["finetuned"]

    code, out, _ = select("chained", "--dataset", saved)  # no options: reused, and the record carried over
    record, chained = scores("chained")
    assert code == 0 and chained == cosine and record["metric"] == "cosine" and record["base"] == cosine_record["base"]

    unrecorded = tmp_path / "copied.jsonl"
    unrecorded.write_text(Path(saved).read_text())
    code, _, err = select("unknown", "--dataset", str(unrecorded), "--metric", "cosine")
    assert code == 2 and "not recorded" in err
    code, _, err = select("half", "--dataset", saved, "--target", str(models / "ft"))
    assert code == 2 and "go together" in err
