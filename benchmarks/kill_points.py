"""`kill -9` at random points of `eda train-draft` (with checkpoints), `eda regenerate` and `eda export`: a rerun of
the same command must give what an uninterrupted run gives, and nothing finished may be lost on the way.

    python benchmarks/kill_points.py --points 8 --json docs/benchmarks/kill_points.json --markdown docs/reliability.md

`--points` is per command. Each command first runs twice uninterrupted: the first run is the reference (its result,
and the span in which it wrote: the first and the last change of its output folder or of a temporary folder beside
it), the second checks that an uninterrupted run repeats it exactly (else a mismatch after a kill could be noise).
Then, for each point, the command starts in a fresh output folder, is sent SIGKILL after a delay drawn uniformly
from that span widened by `WINDOW_MARGIN_S` on both sides (so it dies while working, not while importing), and is
run again with the same arguments. The table counts where each kill fell (`PHASES`). The kill and the rerun pass
when:

- **intact**: right after the kill, whatever a reader would take for finished is whole. For `train-draft`, every
  checkpoint that resuming would pick (`last_complete_checkpoint`) has readable weights. For `regenerate`,
  `data.jsonl` is absent or equal to the reference. For `export`, which starts over a previous export of another
  draft with `--overwrite`, the output folder holds either that previous export or the new one, byte for byte.
- **same result**: the rerun exits 0, and its result equals the reference. For `train-draft` that is the saved
  draft's tensors, exactly (resuming restores the data order and the RNG; the command passes
  `--resume_from_checkpoint last`, which starts afresh when no checkpoint is finished yet); for `regenerate` every
  row's `input_ids`, `loss_mask` and `response`; for `export` every file's bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_inputs import VOCAB, WORDS, Models, command_and_machine, publish  # noqa: E402

COMMANDS = ("train-draft", "regenerate", "export")
POLL_S = 0.01
#: a kill is drawn from the span in which the reference run wrote, widened by this much on both sides
WINDOW_MARGIN_S = 0.3
TRAIN_FLAGS = [
    "--max_steps", "120", "--save_strategy", "steps", "--save_steps", "10", "--per_device_train_batch_size", "4",
    "--learning_rate", "0.01", "--seed", "0", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
    "--resume_from_checkpoint", "last",
]


def build_fixtures(root: Path) -> None:
    """A tiny target with its tokenizer, prompts, a tokenized dataset, and two drafts (the one exported, and another
    whose export is the previous state `export --overwrite` replaces)."""
    import torch

    from eda_adapters import EagleDraftModel

    models = Models.get()
    models.target.save_pretrained(root / "target")
    models.tokenizer.save_pretrained(root / "target")
    rng = random.Random(0)
    prompts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 6))) for _ in range(128)]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    ids = torch.randint(4, len(WORDS) + 4, (24, 16), generator=torch.Generator().manual_seed(0)).tolist()
    (root / "data.jsonl").write_text("".join(
        json.dumps({"input_ids": row, "loss_mask": [0] * 4 + [1] * 12}) + "\n" for row in ids))
    from transformers import LlamaConfig, LlamaForCausalLM

    wide = LlamaForCausalLM(LlamaConfig(  # exported drafts take long enough to write (60 MB) for a kill to land in it
        vocab_size=VOCAB, hidden_size=1024, intermediate_size=2816, num_hidden_layers=1, num_attention_heads=8,
        num_key_value_heads=8))
    for name, seed in (("draft", 0), ("other_draft", 1)):
        torch.manual_seed(seed)
        EagleDraftModel.from_target(wide).save_pretrained(root / name)


def command_args(command: str, root: Path, out: Path) -> list[str]:
    """The arguments of one run of `command` writing to `out`."""
    if command == "train-draft":
        return ["train-draft", "--target", str(root / "target"), "--dataset", str(root / "data.jsonl"),
                "--output-dir", str(out), *TRAIN_FLAGS]
    if command == "regenerate":
        return ["regenerate", "--target", str(root / "target"), "--prompts", str(root / "prompts.jsonl"),
                "--output-dir", str(out), "--max-new-tokens", "32", "--batch-size", "2", "--no-chat-template"]
    if command == "export":
        return ["export", "--draft", str(root / "draft"), "--output-dir", str(out), "--overwrite"]
    raise ValueError(command)


@dataclass
class Run:
    """One process: its exit code, when what it writes changed and when it ended (seconds from its start)."""

    returncode: int
    changes_s: list[float]  # each time its output folder's entries or its temporary siblings changed
    ended_s: float
    stderr_tail: str
    outputs_before: set[str]  # see `_outputs`


def _outputs(out: Path) -> set[str]:
    """`out`'s entries and its temporary siblings (`.NAME.tmp-*`): a change means the run has started writing."""
    siblings = {p.name for p in out.parent.glob(f".{out.name}.*")} if out.parent.is_dir() else set()
    return siblings | ({p.name for p in out.iterdir()} if out.is_dir() else set())


def run_eda(argv: list[str], out: Path, kill_after_s: float | None = None) -> Run:
    """Run `eda ARGV` in a child process, sending SIGKILL after `kill_after_s` if it is still running then."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    before = _outputs(out)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, "-m", "eda_adapters", *argv], stdout=subprocess.DEVNULL,
                                 stderr=stderr, env=env)
        changes, seen = [], before
        while child.poll() is None:
            now = time.perf_counter() - start
            if (current := _outputs(out)) != seen:
                changes.append(now)
                seen = current
            if kill_after_s is not None and now >= kill_after_s:
                child.send_signal(signal.SIGKILL)
                child.wait()
                break
            time.sleep(POLL_S)
        ended = time.perf_counter() - start
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-2000:]
    return Run(child.returncode, changes, ended, tail, before)


# ------------------------------------------------------------------------------------------------ what is compared


def tree_digest(folder: Path) -> str | None:
    """A digest of every file's path and bytes under `folder` (temporary siblings are outside it); `None` if it is
    missing."""
    if not folder.is_dir():
        return None
    hasher = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hasher.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()[:16]


def weights_digest(file: Path) -> str:
    """A digest of a safetensors file's tensors (names and exact values, not the header's order or metadata)."""
    import torch
    from safetensors.torch import load_file

    hasher = hashlib.sha256()
    for name, tensor in sorted(load_file(file).items()):
        hasher.update(name.encode() + b"\0" + tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]


def rows_digest(file: Path) -> str | None:
    """A digest of each row's tokens and text in a regenerated `data.jsonl`; `None` if it is missing."""
    if not file.is_file():
        return None
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    kept = [[row["input_ids"], row["loss_mask"], row["response"]] for row in rows]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def result_digest(command: str, out: Path) -> str | None:
    """What an uninterrupted run of `command` must reproduce, read from its output folder."""
    if command == "train-draft":
        weights = out / "model.safetensors"
        return weights_digest(weights) if weights.is_file() else None
    if command == "regenerate":
        return rows_digest(out / "data.jsonl")
    return tree_digest(out)


PHASES = ("before writing", "while writing", "after the result")


def state_after_kill(command: str, out: Path, before: set[str], reference: str, previous: str | None
                     ) -> tuple[bool, str]:
    """Whether what a reader would take for finished is whole right after a kill, and the phase the kill hit:
    before the command wrote anything, while it was writing, or after its result was in place."""
    digest = result_digest(command, out) if command != "train-draft" else None
    if command == "train-draft":
        from eda_adapters.training.run_signature import last_complete_checkpoint

        last, _ = last_complete_checkpoint(out)
        try:
            intact = last is None or bool(weights_digest(last / "model.safetensors"))
        except Exception:  # noqa: BLE001 (a checkpoint taken for finished whose weights do not load)
            intact = False
        done = (out / "model.safetensors").is_file()
    else:
        intact = digest in {None, reference} | ({previous} if command == "export" else set())
        done = digest == reference
    if done:
        return intact, PHASES[2]
    return intact, PHASES[0] if _outputs(out) == before else PHASES[1]


# ---------------------------------------------------------------------------------------------------- the runs


@dataclass
class Point:
    """One kill and its rerun."""

    command: str
    kill_after_s: float
    killed: bool  # False when the run had already exited
    intact: bool
    phase: str  # what the kill hit: see PHASES
    rerun_code: int
    same_result: bool
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.intact and self.rerun_code == 0 and self.same_result


def fresh_output(command: str, root: Path, work: Path, name: str) -> Path:
    """A new output folder for one run; for `export`, one that already holds the previous export (of another draft)."""
    out = work / name
    if command == "export":
        shutil.copytree(root / "previous_export", out)
    return out


def kill_and_rerun(command: str, root: Path, work: Path, name: str, delay: float, reference: str,
                   previous: str | None) -> Point:
    out = fresh_output(command, root, work, name)
    argv = command_args(command, root, out)
    killed_run = run_eda(argv, out, kill_after_s=delay)
    killed = killed_run.returncode == -signal.SIGKILL
    intact, phase = state_after_kill(command, out, killed_run.outputs_before, reference, previous)
    rerun = run_eda(argv, out)
    digest = result_digest(command, out) if rerun.returncode == 0 else None
    error = rerun.stderr_tail.strip().splitlines()[-1:] if rerun.returncode else []
    return Point(command, round(delay, 3), killed, intact, phase, rerun.returncode, digest == reference,
                 error[0] if error else "")


def reference_runs(command: str, root: Path, work: Path, count: int = 2) -> dict[str, Any]:
    """`count` uninterrupted runs: the reference result, the window a kill is drawn from, and whether a run repeats
    (`repeats` is `None` for one run)."""
    runs, digests = [], []
    for i in range(count):
        out = fresh_output(command, root, work, f"{command}-reference-{i}")
        run = run_eda(command_args(command, root, out), out)
        if run.returncode != 0:
            raise SystemExit(f"uninterrupted {command} failed:\n{run.stderr_tail}")
        runs.append(run)
        digests.append(result_digest(command, out))
    changes = runs[0].changes_s or [runs[0].ended_s / 2]
    window = [max(0.0, changes[0] - WINDOW_MARGIN_S), min(runs[0].ended_s, changes[-1] + WINDOW_MARGIN_S)]
    return {"reference": digests[0], "repeats": len(set(digests)) == 1 if count > 1 else None,
            "window_s": [round(t, 3) for t in window], "uninterrupted_s": [round(r.ended_s, 2) for r in runs]}


def prepare_previous_export(root: Path) -> str | None:
    """Export the other draft: the state `export --overwrite` replaces in every export run."""
    out = root / "previous_export"
    argv = ["export", "--draft", str(root / "other_draft"), "--output-dir", str(out)]
    run = run_eda(argv, out)
    if run.returncode != 0:
        raise SystemExit(f"previous export failed:\n{run.stderr_tail}")
    return tree_digest(out)


# ------------------------------------------------------------------------------------------------------ the report


def markdown(points: list[Point], references: dict[str, dict], command: str, seconds: float, machine: str) -> str:
    """The table of kills per command, for `docs/reliability.md`."""
    lines = ["| command | uninterrupted runs (s) | repeat exactly | kill window (s) | kills | "
             + " | ".join(f"kill hit {phase}" for phase in PHASES) + " | exited before its kill | intact after "
             "the kill | rerun gives the same result | failed |",
             "|---|---|---|---|" + "---:|" * (len(PHASES) + 5)]
    for name, ref in references.items():
        mine = [p for p in points if p.command == name]
        hits = [sum(p.killed and p.phase == phase for p in mine) for phase in PHASES]
        lines.append(
            f"| `eda {name}` | {' / '.join(f'{s:.1f}' for s in ref['uninterrupted_s'])} | "
            f"{'yes' if ref['repeats'] else '**no**'} | {ref['window_s'][0]:.1f} to {ref['window_s'][1]:.1f} | "
            f"{len(mine)} | {' | '.join(map(str, hits))} | {sum(not p.killed for p in mine)} | "
            f"{sum(p.intact for p in mine)} | {sum(p.same_result for p in mine)} | {sum(not p.passed for p in mine)} |")
    failures = [p.__dict__ for p in points if not p.passed]
    return "\n".join([f"Command: `{command}`", f"({seconds:.0f} s on {machine}).", "", *lines, "",
                      *([f"Failures: {json.dumps(failures[:5])}"] if failures else [])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8, help="Kills per command (default 8).")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="Comma-separated (default: all three).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill delays.")
    parser.add_argument("--json", default=None, help="Write every point here.")
    parser.add_argument("--markdown", default=None, help="Write the table here (a file of its own, or a section).")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    start = time.perf_counter()
    points, references = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_fixtures(root)
        previous = prepare_previous_export(root)
        for command in args.commands.split(","):
            references[command] = ref = reference_runs(command, root, root)
            print(f"{command}: {ref}", flush=True)
            for i in range(args.points):
                delay = rng.uniform(*ref["window_s"])
                point = kill_and_rerun(command, root, root, f"{command}-{i}", delay, ref["reference"], previous)
                points.append(point)
                print(f"  {point}", flush=True)
    seconds = time.perf_counter() - start
    command, machine = command_and_machine(parser, args, "kill_points.py")
    publish(args, "kill_points.py", markdown(points, references, command, seconds, machine), {
        "references": references, "points": [p.__dict__ for p in points], "seconds": seconds, "machine": machine,
        "command": command})
    if any(not p.passed for p in points):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
