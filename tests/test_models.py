"""Model kinds and sweeps: classifier heads mapped by name, seq2seq, parameter counts, resume, processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import build_classifier, build_seq2seq, nli_rows, write_jsonl

from nli_eval.backends.classifier import map_head_labels
from nli_eval.backends.loader import BackendOptions
from nli_eval.errors import ModelError
from nli_eval.labels import Label
from nli_eval.modeling import count_from_headers, count_loaded, resolve
from nli_eval.runner import RunConfig, Runner

ROBERTA_MNLI = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}


def all_entailment(root: Path, n: int = 12) -> Path:
    rows = nli_rows(n)
    for r in rows:
        r["label"] = 0
    write_jsonl(root / "anli" / "dev_r1.jsonl", rows)
    return root


def run(models, data, **kw):
    cfg = RunConfig(models=tuple(str(m) for m in models), tasks=kw.pop("tasks", ("anli_r1",)), split="dev",
                    data_dir=str(data), progress=False, **kw)
    return Runner(cfg).run()


def test_classifier_maps_labels_by_name(tmp_path):
    model = build_classifier(tmp_path / "clf", ROBERTA_MNLI, favour=2)  # index 2 is ENTAILMENT
    record = run([model], all_entailment(tmp_path / "data"))
    m = record.models[0]
    assert m.backend == "classifier"
    assert m.results[0].accuracy == 1.0
    assert m.results[0].predicted_distribution == {"entailment": 12, "neutral": 0, "contradiction": 0}


def test_classifier_head_names_any_case_and_two_way():
    assert map_head_labels({0: "entailment", 1: "not_entailment"}, None, "m") == {
        0: Label.ENTAILMENT, 1: Label.NON_ENTAILMENT}
    assert map_head_labels({"0": "Contradiction", "1": "Neutral", "2": "Entailment"}, None, "m")[2] is Label.ENTAILMENT


def test_generic_label_names_need_a_label_map(tmp_path, capsys):
    model = build_classifier(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, favour=1)
    data = all_entailment(tmp_path / "data")
    with pytest.raises(ModelError, match="--label-map"):
        run([model], data)
    from nli_eval.cli import main
    args = ["run", str(model), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(data), "--no-progress"]
    assert main(args) == 2
    assert "--label-map" in capsys.readouterr().err
    ok = main(args + ["--label-map", "LABEL_0=contradiction,LABEL_1=entailment,LABEL_2=neutral"])
    assert ok == 0 and " 100.0 " in capsys.readouterr().out


def test_classifier_refuses_shots(tmp_path):
    model = build_classifier(tmp_path / "clf", ROBERTA_MNLI)
    with pytest.raises(Exception, match="takes no shots"):
        run([model], all_entailment(tmp_path / "data"), shots=(1,))


def test_seq2seq_scores_every_label(tmp_path, anli_hub):
    model = build_seq2seq(tmp_path / "t5")
    record = run([model], anli_hub, shots=(0, 1))
    m = record.models[0]
    assert m.backend == "seq2seq" and [r.n for r in m.results] == [30, 30]


def test_seq2seq_matches_direct_decoding(tmp_path, anli_hub):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nli_eval.backends.seq2seq import Seq2SeqBackend
    from nli_eval.prompts import PromptBuilder
    from nli_eval.templates import BUILTIN_TEMPLATES
    from nli_eval.labels import LabelSpace
    from nli_eval.types import NLIExample

    path = build_seq2seq(tmp_path / "t5b")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    backend = Seq2SeqBackend(model, tok, name="t5", batch_size=2)
    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    prompts = [builder.render(NLIExample(str(i), f"the cat sat {i}", "a dog ran", Label.ENTAILMENT)) for i in range(3)]
    scores = backend.score(prompts)
    for p, s in zip(prompts, scores):
        enc = tok(p.context, return_tensors="pt")
        for label, word in p.options.items():
            target = tok(word.strip(), add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                out = model(**enc, labels=target)
            assert s[label] == pytest.approx(-out.loss.item() * target.shape[1], abs=1e-4)


def test_parameter_count_from_headers_matches_loaded(tiny_llama):
    from transformers import AutoModelForCausalLM

    ref = resolve(str(tiny_llama))
    headers = count_from_headers(ref)
    loaded = count_loaded(AutoModelForCausalLM.from_pretrained(tiny_llama))
    assert headers.source == "safetensors"
    assert (headers.total, headers.non_embedding) == (loaded.total, loaded.non_embedding)


def test_sweep_one_record_per_model(tiny_llama, tiny_gpt2, anli_hub, tmp_path):
    models_file = tmp_path / "models.txt"
    models_file.write_text(f"# ladder\n{tiny_gpt2}\n{tiny_llama}\n")
    from nli_eval.cli import main
    code = main(["run", "--models", str(models_file), "--tasks", "anli_r1", "--split", "dev", "--data-dir",
                 str(anli_hub), "-o", str(tmp_path / "out"), "--no-progress", "--no-report"])
    assert code == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["label"] for m in data["models"]] == [tiny_gpt2.name, tiny_llama.name]
    assert all(m["params_total"] for m in data["models"])


def test_pickle_weights_need_a_flag(tmp_path, tiny_gpt2, anli_hub):
    import shutil
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_gpt2, folder)
    (folder / "model.safetensors").unlink()
    import torch
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_gpt2).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="--allow-pickle"):
        run([folder], anli_hub)
    load = __import__("nli_eval.modeling", fromlist=["LoadOptions"]).LoadOptions(allow_pickle=True)
    assert run([folder], anli_hub, load=load).models[0].results[0].n == 30


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nli_eval", "run", *args]


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_without_rescoring(tiny_llama, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "anli" / "dev_r1.jsonl", nli_rows(240, seed=5))
    out = tmp_path / "out"
    args = cli(str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(data), "-o", str(out),
               "--batch-size", "1", "--no-progress", "--no-report")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache_dir = out / "cache"
    deadline = time.time() + 240
    done_before = 0
    while time.time() < deadline:
        files = list(cache_dir.glob("*.jsonl")) if cache_dir.exists() else []
        done_before = sum(len(f.read_text().splitlines()) for f in files)
        if done_before >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 40 <= done_before < 240, done_before
    assert not (out / "results.json").exists()
    subprocess.run(args, env=env, check=True, capture_output=True)
    resumed = json.loads((out / "results.json").read_text())["models"][0]
    kept = sum(len(f.read_text().splitlines()) for f in cache_dir.glob("*.jsonl")) - 240
    assert resumed["examples_scored"] + resumed["examples_cached"] == 240
    assert resumed["examples_cached"] >= done_before and resumed["examples_scored"] <= 240 - done_before
    assert kept <= 1  # at most one line torn by the kill was scored again
    fresh = tmp_path / "fresh"
    subprocess.run(cli(str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(data), "-o",
                       str(fresh), "--batch-size", "1", "--no-progress"), env=env, check=True, capture_output=True)
    a = (out / "samples" / tiny_llama.name / "anli_r1_0shot.jsonl").read_text().splitlines()
    b = (fresh / "samples" / tiny_llama.name / "anli_r1_0shot.jsonl").read_text().splitlines()
    assert [json.loads(x)["predicted"] for x in a] == [json.loads(x)["predicted"] for x in b]


def test_ranks_leave_the_process_group(tmp_path):
    import torch.distributed as dist
    from nli_eval.dist import Ranks

    # A group of one stands in for a launched one: close() must destroy it while Python is whole
    # (gloo's threads torn down by the exit instead abort the process now and then).
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        Ranks(rank=0, world=2).close()
        assert not dist.is_initialized()
        Ranks(rank=0, world=2).close()  # a second close, or one without a group, does nothing
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    Ranks().close()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(launcher, tiny_gpt2, anli_hub, tmp_path):
    common = [str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "--shots", "0,2",
              "--batch-size", "3", "--no-progress", "--no-report"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(cli(*common, "-o", str(tmp_path / "one")), env=env, check=True, capture_output=True)
    port = free_port()  # never the default 29500, which an earlier run may still hold
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "nli_eval", "run"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "nli_eval", "run"]
    two = subprocess.run(cmd + common + ["-o", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    errors = [line for line in two.stderr.splitlines()
              if any(word in line for word in ("Error", "error:", "terminate", "Signal"))]
    assert two.returncode == 0, "\n".join(errors[:20]) or two.stderr[-2000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["config"]["processes"] == 2
    ranks = {f.name for f in (tmp_path / "two" / "cache").glob("*.jsonl")}
    assert any("rank1" in r for r in ranks) and any("rank0" in r for r in ranks)
    for shots in (0, 2):
        name = f"anli_r1_{shots}shot.jsonl"
        one = (tmp_path / "one" / "samples" / tiny_gpt2.name / name).read_text().splitlines()
        other = (tmp_path / "two" / "samples" / tiny_gpt2.name / name).read_text().splitlines()
        assert [json.loads(x)["id"] for x in one] == [json.loads(x)["id"] for x in other]
        assert [json.loads(x)["predicted"] for x in one] == [json.loads(x)["predicted"] for x in other]
