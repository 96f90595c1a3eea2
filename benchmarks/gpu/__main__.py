"""The GPU benchmark: tokens/s, MFU and peak memory of a GPT-style decoder (GPT-2 small, 1,024
tokens, bf16, SDPA, torch.compile) and images/s of a ResNet-50 (224x224, bf16, channels-last),
each trained by `python -m dtrain` and by a hand-written PyTorch loop, printed as one JSON object.

    python -m benchmarks.gpu [--device cuda|cpu] [--tiny] [--out DIR] [--threads N] [--no-compile] [--compile-resnet]

benchmarks/gpu.sh runs it on the GPU machine (README, Performance). `--device cpu --tiny` is the
dry run the tests use: the same code, tiny sizes, seconds on a CPU.

MFU = tokens/s x FLOPs per token / peak FLOP/s, the same count on both sides: the net's own
`Transformer.flops_per_token()`, nanoGPT's and PaLM's estimate 6N + 12 L d T (N the parameters
without the position table, each used once per token in a matrix product: 2N forward, 4N
backward; 12 L d T the attention scores and their weighted sum over T positions in L layers,
forward and backward, counted whole although causal attention computes half). The peak is the
dense bf16 datasheet figure (989.4 TFLOP/s for an H100 SXM or an H200) and, beside it, the rate
of a large bf16 matrix product measured here. Each side's rate is its median window of
`window` steps (host time between device synchronisations), the `warmup` steps left out: the
hand-written loop times its own windows; dtrain's are the throughput figures it logs (its
metrics.csv), which end in the same synchronisation.
"""

import argparse
import dataclasses
import datetime
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.gpu import ceilings, hand_loop, through_dtrain
from benchmarks.gpu.sizes import cases

MFU_GOAL = 0.5  # issue 14: MFU >= 50%
OVERHEAD_GOAL = 0.98  # ... and dtrain within 2% of the hand-written loop


@dataclasses.dataclass
class Setting:
    """What every case shares: the device, the two roofs, where runs and logs go, the time left."""

    device: torch.device
    dense_peak: float | None
    matmul_peak: float | None
    work: Path
    log_dir: Path
    env: dict
    deadline: float  # time.perf_counter() by which the whole benchmark should be done
    dtrain_timeout: float

    def timeout(self) -> float:
        """Seconds the next `python -m dtrain` may take: its own limit, or what the budget leaves."""
        return min(self.dtrain_timeout, max(30.0, self.deadline - time.perf_counter()))

    def utilisation(self, figures: dict, achieved: float) -> None:
        figures.update(tflops=achieved / 1e12, mfu=ratio(achieved, self.dense_peak), mfu_vs_measured_matmul=ratio(achieved, self.matmul_peak))


def say(message: str) -> None:
    print(f"[gpu benchmark {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def guarded(name: str, work, *args) -> dict:
    """One part (a case, or one side of it); a failure is reported in the JSON and the rest still runs."""
    began = time.perf_counter()
    try:
        result = work(*args)
    except Exception as error:  # the benchmark reports every part it could measure
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc().splitlines()[-12:]}
    result.setdefault("seconds", time.perf_counter() - began)
    say(f"{name}: {'failed: ' + result['error'] if 'error' in result else 'done'} ({result['seconds']:.0f} s)")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next side, maybe another process, gets the memory back
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def decoder_case(case, compile: bool, setting: Setting) -> dict:
    with torch.device("meta"):
        net = hand_loop.build_decoder(case, "meta")
    flops_per_token = net.flops_per_token()
    result = {
        "case": case.as_dict(), "compile": compile, "params": sum(p.numel() for p in net.parameters()),
        "flops_per_token": flops_per_token, "flops_formula": "6 N + 12 L d T (Transformer.flops_per_token)",
        **hand_loop.flash_attention_runs(case, setting.device),
    }
    del net
    result["hand"] = guarded("decoder, hand-written loop", hand_loop.decoder_loop, case, setting.device, compile)
    overrides = through_dtrain.decoder_overrides(case, setting.device.type, compile)
    result["dtrain"] = guarded(
        "decoder, python -m dtrain", through_dtrain.run_dtrain, overrides, setting.work / "decoder",
        setting.log_dir / "decoder_dtrain.log", setting.timeout(), case.warmup, setting.env,
    )
    if result["dtrain"].get("samples_per_sec"):
        result["dtrain"]["tokens_per_sec"] = result["dtrain"]["samples_per_sec"] * case.block_size
    for side in ("hand", "dtrain"):
        if result[side].get("tokens_per_sec"):
            setting.utilisation(result[side], result[side]["tokens_per_sec"] * flops_per_token)
    result["dtrain_over_hand"] = ratio(result["dtrain"].get("tokens_per_sec"), result["hand"].get("tokens_per_sec"))
    mfu = result["dtrain"].get("mfu")
    result["goals"] = {
        f"dtrain_mfu_at_least_{MFU_GOAL}": None if mfu is None else mfu >= MFU_GOAL,
        "dtrain_within_2pct_of_hand": None if result["dtrain_over_hand"] is None else result["dtrain_over_hand"] >= OVERHEAD_GOAL,
    }
    return result


def resnet_case(case, compile: bool, setting: Setting) -> dict:
    case, shared_memory = fit_workers_to_shared_memory(case)
    result = {"case": case.as_dict(), "compile": compile, "channels_last": True, "shared_memory": shared_memory}
    result["hand"] = guarded("resnet, hand-written loop", hand_loop.resnet_loop, case, setting.device, compile)
    overrides = through_dtrain.resnet_overrides(case, setting.device.type, compile)
    result["dtrain"] = guarded(
        "resnet, python -m dtrain", through_dtrain.run_dtrain, overrides, setting.work / "resnet",
        setting.log_dir / "resnet_dtrain.log", setting.timeout(), case.warmup, setting.env,
    )
    result["dtrain"]["images_per_sec"] = result["dtrain"].get("samples_per_sec")
    # FLOPs per image as dtrain counts them (the model on the meta device), for both sides.
    flops_per_image = result["dtrain"].get("recorded_flops_per_sample")
    for side in ("hand", "dtrain"):
        if result[side].get("images_per_sec") and flops_per_image:
            setting.utilisation(result[side], result[side]["images_per_sec"] * flops_per_image)
    result["dtrain_over_hand"] = ratio(result["dtrain"].get("images_per_sec"), result["hand"].get("images_per_sec"))
    return result


def fit_workers_to_shared_memory(case) -> tuple[object, dict]:
    """DataLoader workers hand their batches over in /dev/shm (two in flight per worker); where
    it is too small for that (a container's 64 MB, say) a worker dies of SIGBUS, so the case
    loads in the main process instead, on both sides alike."""
    batch_bytes = case.batch_size * 3 * case.image_size**2 * 4
    needed = 2 * case.num_workers * batch_bytes * 2  # twice the batches in flight, for margin
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        free = 0
    note = {"dev_shm_free_gib": free / 2**30, "dev_shm_needed_gib": needed / 2**30}
    if case.num_workers and free < needed:
        note["num_workers_lowered_from"] = case.num_workers
        case = dataclasses.replace(case, num_workers=0)
    return case, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU dry run")
    parser.add_argument("--out", type=Path, help="folder for gpu_benchmark.json (written after each case) and the dtrain runs' logs")
    parser.add_argument("--threads", type=int, help="CPU threads for both sides (OMP_NUM_THREADS for dtrain)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", default=None, help="the decoder without torch.compile")
    parser.add_argument("--compile-resnet", action="store_true", help="torch.compile the ResNet too (a minute or two more)")
    parser.add_argument("--dtrain-timeout", type=float, default=240, help="seconds each python -m dtrain may take")
    parser.add_argument("--budget", type=float, default=420, help="seconds the whole benchmark should take: a late dtrain run gets what is left")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu benchmark: no CUDA device here; run it on the GPU machine, or --device cpu --tiny for the dry run", file=sys.stderr)
        return 2
    compile = device.type == "cuda" if args.compile is None else args.compile  # compiling on a CPU takes longer than the dry run
    env = {}
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    decoder, resnet = cases(args.tiny)
    result = {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "tiny": args.tiny,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, **_library_versions()},
    }
    dense, source = ceilings.dense_peak(device)
    matmul = guarded("bf16 matrix product", ceilings.matmul_rate, device, 8192 if device.type == "cuda" else 256)
    result["ceilings"] = {"dense_bf16_peak_flops": dense, "dense_peak_source": source, "measured_bf16_matmul": matmul}

    def save() -> str:
        text = json.dumps(result, indent=1)
        if args.out:  # after each case, so a run stopped from outside still leaves what it measured
            (args.out / "gpu_benchmark.json").write_text(text + "\n")
        return text

    with tempfile.TemporaryDirectory(prefix="dtrain-gpu-benchmark-") as work:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        setting = Setting(device, dense, matmul.get("median_flops"), Path(work), args.out or Path(work), env, began + args.budget, args.dtrain_timeout)
        result["decoder"] = guarded("decoder", decoder_case, decoder, compile, setting)
        save()
        result["resnet"] = guarded("resnet", resnet_case, resnet, args.compile_resnet, setting)
    result["total_seconds"] = time.perf_counter() - began
    print(save())
    failed = [name for name, part in _parts(result) if "error" in part]
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _parts(result: dict):
    yield "matmul", result["ceilings"]["measured_bf16_matmul"]
    for case in ("decoder", "resnet"):
        yield case, result[case]
        for side in ("hand", "dtrain"):
            if side in result[case]:
                yield f"{case} {side}", result[case][side]


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("lightning", "hydra-core", "omegaconf", "torchvision"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
