"""The GPU check: what has never run on a GPU, in one command (#29 item 4).

    python benchmarks/gpu_check.py                  # a few minutes on one H100 (limit 8)
    python benchmarks/gpu_check.py --only training attention --peak-tflops 989
    python benchmarks/gpu_check.py --cpu-smoke      # every part's code on the CPU, toy sizes

Four parts, each guarded: a part that fails prints its error and the next part runs; the exit
status is 1 when a part failed, 0 when every part passed or was skipped. On a machine without
CUDA every part prints "no CUDA device" and nothing else runs (``--cpu-smoke`` runs the parts'
code on the CPU at toy sizes instead: a test of the script, not a measurement).

1 attention  packed varlen batches (so400m heads: H = 16, D = 72, bf16): xformers against
             SDPA, outputs and input gradients against the math reference on a batch of 3k
             tokens, and the speed of a forward + backward on 27k tokens in 93 samples.
             Without xformers (its wheel is too large to carry) SDPA alone, and it says so.
2 training   bf16 autocast training steps (AdamW, L1 on 256 px images) of the small and base
             presets: steps/s, tokens/s, model FLOPs (atoken.engine.plan_formulas) and their
             share of the GPU's dense bf16 peak (MFU); one so400m-size step (8 images of 512
             px); each step's peak CUDA memory beside what ``atoken train --plan`` predicts.
3 fsdp2      FSDP2 on one GPU: a process group of one rank (nccl), ``fully_shard`` per
             transformer block then the root (atoken's recipe: bf16 compute, fp32 gradient
             reduction), AdamW steps against the same model unsharded under bf16 autocast.
4 gsplat     the gsplat renderer (CUDA) against the ``cpu`` renderer on one scene of 50k
             Gaussians and 4 views: the image difference and the time of each. Without gsplat
             (``pip install gsplat``; it compiles its kernels on first use), it says so.

MFU needs the GPU's dense bf16 peak: known for H100/H200/A100/L40S/L4 by name, else give
``--peak-tflops``. ``make wheelhouse`` gathers the wheels atoken needs beyond what the GPU
machines have (docs/performance.md#the-gpu-check).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable

import torch

PARTS = ("attention", "training", "fsdp2", "gsplat")
#: Dense bf16 tensor-core peaks (TFLOP/s) by a substring of the device name, first match wins.
PEAKS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)
NO_CUDA = "no CUDA device (skipped)"


class Env:
    """Where the parts run and at which sizes: CUDA at full size, or the CPU at toy sizes
    (``--cpu-smoke``)."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke else "cuda")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated() if self.device.type == "cuda" else None

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None

    def size(self, full: int, toy: int) -> int:
        return toy if self.smoke else full


def say(part: str, text: str) -> None:
    """Print one line of a part's report."""
    print(f"[{part}] {text}", flush=True)


def timed(env: Env, fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeat`` synchronised runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    env.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        env.sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_tflops(arg: float | None) -> float | None:
    """The dense bf16 peak of this GPU in TFLOP/s: ``arg``, else by its name, else None."""
    if arg:
        return arg
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAKS if key in name), None)


def _l1_step(model, optim, packed, batch) -> Callable[[], float]:
    """One bf16-autocast AdamW step of the L1 reconstruction loss (returns the loss)."""

    def step() -> float:
        optim.zero_grad(set_to_none=True)
        with torch.autocast(batch[0].device.type, dtype=torch.bfloat16):
            out = model(packed)
            loss = sum((y - x).abs().mean() for y, x in zip(out.samples, batch, strict=True))
        loss.backward()
        optim.step()
        return float(loss.detach())

    return step


# ---------------------------------------------------------------------------------- parts
def check_attention(env: Env, args: argparse.Namespace) -> None:
    from atoken.core.attention import attention_math, attention_sdpa, xformers_available

    H, D = 16, 72
    g = torch.Generator(device=env.device).manual_seed(0)

    def batch(lengths: list[int]) -> tuple[torch.Tensor, ...]:
        N = sum(lengths)
        q, k, v = (
            torch.randn(N, H, D, device=env.device, dtype=torch.bfloat16, generator=g)
            for _ in "qkv"
        )
        return q, k, v, torch.tensor(lengths, device=env.device)

    def run(fn, q, k, v, seqlens):
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves, seqlens)
        out.float().square().mean().backward()
        return out.detach(), [t.grad for t in leaves]

    backends = {"sdpa": attention_sdpa}
    if not xformers_available():
        say("attention", "xformers: not installed (its wheel is too large to carry): SDPA only")
    elif env.device.type != "cuda":
        say("attention", "xformers: its kernels run on CUDA only: SDPA only on the CPU")
    else:
        from atoken.core.attention import attention_xformers

        backends["xformers"] = attention_xformers
    lengths = [16, 64, 256, 576, 1024, 37, 1024, 200][: env.size(8, 3)]
    small = batch(lengths)
    ref_out, ref_grads = run(attention_math, *(t.float() for t in small[:3]), small[3])
    for name, fn in backends.items():
        out, grads = run(fn, *small)
        err = (out.float() - ref_out).abs().max().item()
        pairs = zip(grads, ref_grads, strict=True)
        gerr = max((a.float() - b).abs().max().item() for a, b in pairs)
        where = f"{sum(lengths):,} tokens, {len(lengths)} samples"
        say("attention", f"{name} vs math ({where}): max |out| diff {err:.2e}, max |grad| "
                         f"diff {gerr:.2e} (bf16 against fp32)")  # fmt: skip
    if env.smoke:
        lengths = [64, 16, 100]
    else:
        lengths = [256] * 16 + [1024] * 8 + [4096] * 2 + [64] * 64 + [729, 1600, 2304]
    big = batch(lengths)
    flops = 3 * 4 * H * D * sum(n * n for n in lengths)  # QK^T and AV, forward + backward
    times = {}
    for name, fn in backends.items():
        times[name] = timed(env, lambda fn=fn: run(fn, *big), repeat=args.repeat)
        say("attention", f"{name}: {sum(lengths):,} tokens in {len(lengths)} samples, forward "
                         f"+ backward {times[name] * 1e3:.1f} ms, "
                         f"{flops / times[name] / 1e12:.1f} TFLOP/s")  # fmt: skip
    if "xformers" in times:
        a, _ = run(backends["xformers"], *big)
        b, _ = run(backends["sdpa"], *big)
        err = (a.float() - b.float()).abs().max().item()
        ratio = times["sdpa"] / times["xformers"]
        say("attention", f"xformers vs sdpa there: max |out| diff {err:.2e}; sdpa {ratio:.2f}x")


def _train_steps(env: Env, preset: str, images: int, side: int, steps: int, peak) -> None:
    from atoken.engine.plan_formulas import activation_bytes, training_flops
    from atoken.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = Tokenizer.from_preset(preset).to(env.device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    batch = [torch.rand(3, side, side, device=env.device) for _ in range(images)]
    step = _l1_step(model, optim, model.prepare(batch, "image"), batch)
    step()  # AdamW's state exists before the memory mark
    optim.zero_grad(set_to_none=True)
    env.sync()
    base = env.allocated()  # the weights, AdamW's state and the batch
    env.reset_peak()
    step()
    env.sync()
    peak_bytes = env.peak()
    seconds = timed(env, step, repeat=steps, warmup=1)
    n = (side // 16) ** 2
    tokens = images * n
    flops = training_flops(model, tokens, images * n * n, modality="image")
    mfu = f", MFU {flops / seconds / (peak * 1e12):.1%}" if peak else ""
    say("training", f"{preset} ({model.attention_backend}): {images} x {side} px = {tokens:,} "
                    f"tokens, {1 / seconds:.2f} steps/s, {tokens / seconds:,.0f} tokens/s, "
                    f"{flops / seconds / 1e12:.2f} TFLOP/s{mfu}")  # fmt: skip
    if base is not None and peak_bytes is not None:
        count = sum(p.numel() for p in model.parameters())
        # what the plan puts on top: fp32 gradients, autocast's bf16 weight copies, activations
        planned = 6 * count + activation_bytes(model, tokens, bf16=True)
        grown = peak_bytes - base
        say("training", f"{preset}: a step's peak CUDA memory over the weights and AdamW state "
                        f"{grown / 1e9:.2f} GB, planned {planned / 1e9:.2f} GB "
                        f"({planned / grown:.2f}x)")  # fmt: skip


def check_training(env: Env, args: argparse.Namespace) -> None:
    peak = args.peak_tflops if env.smoke else peak_tflops(args.peak_tflops)
    if peak is None and not env.smoke:
        say("training", f"{torch.cuda.get_device_name()}: peak unknown, MFU not printed "
                        "(give --peak-tflops)")  # fmt: skip
    if not env.smoke and not torch.cuda.is_bf16_supported():
        say("training", "this GPU has no bf16: the steps run under bf16 autocast anyway")
    runs = (
        ("small", 64, 256, args.steps),
        ("base", 32, 256, args.steps),
        ("so400m", 8, 512, max(2, args.steps // 5)),  # the So/C's size: a batch of 8k tokens
    )
    for preset, images, side, steps in runs:
        if env.smoke:
            preset, images, side, steps = "tiny", 2, 64, 1
        _train_steps(env, preset, images, side, steps, peak)
        if env.device.type == "cuda":
            torch.cuda.empty_cache()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp2(env: Env, args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from atoken.core.transformer import Block
    from atoken.tokenizer import Tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    if env.device.type == "cuda":
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = Tokenizer.from_preset("tiny" if env.smoke else "small").to(env.device).train()
        sharded = copy.deepcopy(plain)
        mesh = init_device_mesh(env.device.type, (1,))  # explicit: pytorch #132471
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for module in sharded.modules():
            if isinstance(module, Block):
                fully_shard(module, mesh=mesh, mp_policy=policy)
        fully_shard(sharded, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
        side, images, steps = env.size(256, 64), env.size(16, 2), env.size(args.steps, 2)
        batch = [torch.rand(3, side, side, device=env.device) for _ in range(images)]
        losses: dict[str, list[float]] = {}
        for name, model in (("unsharded", plain), ("fsdp2", sharded)):
            optim = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
            step = _l1_step(model, optim, model.prepare(batch, "image"), batch)
            start = time.perf_counter()
            losses[name] = [step() for _ in range(steps)]
            env.sync()
            rate = steps / (time.perf_counter() - start)
            kind = type(next(model.parameters())).__name__
            first, last = losses[name][0], losses[name][-1]
            say("fsdp2", f"{name}: {steps} steps, {rate:.2f} steps/s, parameters {kind}, loss "
                         f"{first:.4f} -> {last:.4f}")  # fmt: skip
        pairs = zip(losses["fsdp2"], losses["unsharded"], strict=True)
        diff = max(abs(a - b) / abs(b) for a, b in pairs)
        say("fsdp2", f"largest relative loss difference over the steps: {diff:.2e} (bf16 "
                     "parameters against bf16 autocast of fp32 ones)")  # fmt: skip
    finally:
        dist.destroy_process_group()


def check_gsplat(env: Env, args: argparse.Namespace) -> None:
    from atoken.modalities.mesh import CpuRenderer, GaussianSet
    from atoken.modalities.mesh.cameras import sphere_cameras

    if importlib.util.find_spec("gsplat") is None or env.device.type != "cuda":
        say("gsplat", "gsplat: not installed (pip install gsplat) or no CUDA: cpu renderer only")
        return
    from atoken.modalities.mesh.render_gsplat import GsplatRenderer

    g = torch.Generator().manual_seed(0)
    n = 50_000
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) * 0.4
    scene = GaussianSet(
        means=means,
        scales=torch.full((n, 3), 0.5 / 64),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
        opacities=torch.full((n,), 0.8),
        sh0=torch.randn(n, 3, generator=g),
    )
    camera = sphere_cameras(4, 256)
    start = time.perf_counter()
    ref = CpuRenderer(background=0.0)(scene, camera).rgb
    cpu_s = time.perf_counter() - start
    fields = ("means", "scales", "quats", "opacities", "sh0")
    on_gpu = GaussianSet(**{k: getattr(scene, k).to(env.device) for k in fields})
    gs = GsplatRenderer(background=0.0)
    gpu_s = timed(env, lambda: gs(on_gpu, camera), repeat=args.repeat)
    img = gs(on_gpu, camera).rgb.float().cpu()
    mse = float((img - ref).square().mean())
    psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
    say("gsplat", f"{n:,} Gaussians, 4 views of 256 px: gsplat vs cpu PSNR {psnr:.1f} dB, max "
                  f"|diff| {(img - ref).abs().max():.3f}; gsplat {gpu_s * 1e3:.1f} ms, cpu "
                  f"{cpu_s * 1e3:.0f} ms (its first call, with numba's compile)")  # fmt: skip


CHECKS = {
    "attention": check_attention,
    "training": check_training,
    "fsdp2": check_fsdp2,
    "gsplat": check_gsplat,
}


def main(argv: list[str] | None = None) -> int:
    """Run the parts; 1 when one failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per preset")
    parser.add_argument("--repeat", type=int, default=10, help="timed repeats of a kernel")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak")
    parser.add_argument("--cpu-smoke", action="store_true", help="the parts' code on the CPU")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.repeat, args.steps = 1, 1
    cuda = torch.cuda.is_available()
    env = Env(smoke=args.cpu_smoke)
    xformers = importlib.util.find_spec("xformers") is not None
    gsplat = importlib.util.find_spec("gsplat") is not None
    device = torch.cuda.get_device_name() if cuda else "none"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python "
          f"{sys.version.split()[0]}, device {device}; xformers {'yes' if xformers else 'no'}, "
          f"gsplat {'yes' if gsplat else 'no'}", flush=True)  # fmt: skip
    results = []
    for part in args.only:
        start = time.perf_counter()
        if not cuda and not args.cpu_smoke:
            say(part, NO_CUDA)
            results.append((part, "skipped", 0.0))
            continue
        try:
            CHECKS[part](env, args)
            status = "ok"
        except Exception as exc:  # guarded: the next part runs
            say(part, f"FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=6)
            status = "FAILED"
        finally:
            if cuda:
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
        results.append((part, status, time.perf_counter() - start))
    print("\npart        status   seconds")
    for part, status, seconds in results:
        print(f"{part:<11} {status:<8} {seconds:7.1f}")
    return 1 if any(status == "FAILED" for _, status, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
